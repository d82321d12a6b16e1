"""Names the output uses for no one are refused (issue #25, "decide and document"): 'unknown' in any case,
spacing or punctuation ("unknown.", "un known"), and null / None, with an error naming the value, through the
one name rule (facecore.names.validate_name) that enrolling, renaming and training folders all use."""
from __future__ import annotations

import numpy as np
import pytest

from facecore.errors import InvalidNameError

RESERVED = ["null", "None", "NULL", "unknown.", "un known", "Unknown!", "(none)", "n-u-l-l", "_unknown_"]
ALLOWED = ["Nonet", "Noni", "Nullah", "Noné", "Ann Known", "O'Neil", "José"]


@pytest.mark.parametrize("name", RESERVED)
def test_reserved_words_are_refused_by_the_gallery(tmp_path, name):
    from gallery import FaceRecord, create_gallery

    g = create_gallery(tmp_path / "g", model_id="m", dim=4)
    try:
        with pytest.raises(InvalidNameError, match="reads as") as exc:
            g.add(np.eye(4)[:1], [FaceRecord(name, "a.jpg", "h1", (0, 0, 1, 1))], model_id="m")
        assert repr(name) in str(exc.value)
        g.add(np.eye(4)[:1], [FaceRecord("Ada", "a.jpg", "h1", (0, 0, 1, 1))], model_id="m")
        with pytest.raises(InvalidNameError, match="reads as"):
            g.rename_person("Ada", name)
        assert g.people() == {"Ada": 1}
    finally:
        g.close()


@pytest.mark.parametrize("name", ALLOWED)
def test_names_merely_near_a_reserved_word_are_kept(name):
    from facecore.names import normal_form, validate_name

    assert validate_name(name) == normal_form(name)
