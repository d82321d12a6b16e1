"""How well a model names people: closed set (`closed_set`), open set (`open_set`), LFW-style pairs
(`verification`), the report (`report`), and all of it run on a model directory (`run`)."""
