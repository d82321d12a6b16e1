"""`facetool people`: who a model knows, and changes to them that enrol no photo.

    facetool people list --model DIR [--json]
    facetool people rename --model DIR OLD NEW [--allow-similar]
    facetool people merge --model DIR OLD NEW            (OLD's faces join NEW, who is enrolled already)
    facetool people remove --model DIR NAME
    facetool people faces --model DIR NAME [--sheet FILE.png]     (each face's id and photo)
    facetool people remove-face --model DIR ID                    (one wrongly enrolled face)
    facetool people move-face --model DIR ID NAME                 (one face to the right person)
    facetool people export --model DIR FILE
    facetool people import --model DIR FILE [--backbone B --weights W]
    facetool people make-chips --model DIR

The same jobs as enroll.py's --list, --rename, --remove, --faces, --remove-face, --move-face, --export,
--import and --make-chips, which call the functions here.
"""
from __future__ import annotations

import json
import shlex

import click

import recognizer
from facecore.atomic import atomic_write
from facecore.errors import FaceConflict
from recognizer import archive, lifecycle
from recognizer.faces import correction_summary, face_listing, faces_sheet
from recognizer.cli._options import (allow_similar_option, gallery_option, json_option, model_option, no_cache_option,
                                     start, subcommand, verbose_option, weights_dir_option)

__all__ = ["export_people", "import_people", "main", "make_chips", "model_for_import", "move_face", "remove_face",
           "remove_person", "rename_person", "show_faces", "show_people"]


# ---- the jobs, shared with enroll.py's flags ---------------------------------------------------
def show_people(rec, as_json: bool, make_chips_hint: str = "--make-chips") -> None:
    """Each person with their face count (and faces without a stored chip), then the threshold;
    `make_chips_hint`: the command that makes the missing chips."""
    records = rec.records()
    people = rec.people()
    stored = rec.chip_ids()
    chips: dict[str, int] = {p: 0 for p in people}
    for r in records:
        chips[r.person] += bool(r.chip) and r.chip in stored
    if as_json:
        click.echo(json.dumps({"people": people, "chips": chips, "threshold": rec.threshold_info().to_dict()}, indent=2))
        return
    for person, count in people.items():
        click.echo(f"{count:5d}  {person}" + (f"  ({count - chips[person]} without a chip)" if chips[person] < count else ""))
    click.echo(f"{len(records)} faces, {sum(chips.values())} with a stored chip")
    if sum(chips.values()) < len(records):
        click.echo(f"faces without a chip were enrolled before chips were kept: run {make_chips_hint}", err=True)
    click.echo(rec.threshold_info().describe())


def remove_person(rec, name: str, as_json: bool) -> None:
    n = rec.remove(name)
    click.echo(json.dumps({"removed": name, "faces": n}) if as_json else f"removed {name} ({n} faces)")


def rename_person(rec, old: str, new: str, *, merge: bool, allow_similar: bool, as_json: bool, merge_hint: str) -> None:
    """Rename `old` to `new` (onto an enrolled `new` only when `merge`). `merge_hint`: the command
    that merges, with {old} and {new} to fill in, named when `new` is enrolled already."""
    try:
        if merge:
            rec.merge(old, new)
        else:
            rec.rename(old, new, allow_similar=allow_similar)
    except recognizer.PersonExists as exc:
        hint = merge_hint.format(old=shlex.quote(exc.old), new=shlex.quote(exc.new))
        raise click.ClickException(f"cannot rename {exc.old!r} to {exc.new!r}: {exc.new!r} is enrolled already; "
                                   f"to make them one person: {hint}") from None
    if merge:
        _corrected(rec, {"renamed": old, "to": new, "merged": True},
                   f"merged {old} into {new} ({rec.people().get(new, 0)} faces)", as_json)
    else:
        click.echo(json.dumps({"renamed": old, "to": new}) if as_json else f"renamed {old} -> {new}")


def show_faces(rec, name: str, sheet: str | None, as_json: bool) -> None:
    """`name`'s faces, one a line with the id that remove-face and move-face take; `sheet`: also a PNG
    contact sheet of them, each labelled with its id."""
    listing = face_listing(rec, name)
    if sheet:
        with atomic_write(sheet, 0o644) as fh:
            fh.write(faces_sheet(rec, name))
    if as_json:
        click.echo(json.dumps({**listing, "sheet": sheet}, indent=2))
        return
    for f in listing["faces"]:
        click.echo(f"{f['id']:6d}  {f['photo']}" + ("" if f["chip"] else "  (no chip)"))
    click.echo(f"{listing['person']}: {len(listing['faces'])} faces" + (f"; contact sheet written to {sheet}" if sheet else ""))


def _corrected(rec, what: dict, line: str, as_json: bool) -> None:
    out = correction_summary(rec, what)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(line)
    click.echo(rec.threshold_info().describe())


def remove_face(rec, face_id: int, as_json: bool) -> None:
    r = rec.remove_face(face_id)
    left = rec.people().get(r.person, 0)
    _corrected(rec, {"removed_face": face_id, "person": r.person, "photo": r.source},
               f"removed face {face_id} of {r.person} ({r.source}); {left} faces of {r.person} left", as_json)


def move_face(rec, face_id: int, name: str, *, allow_similar: bool, as_json: bool, remove_hint: str) -> None:
    """Make face `face_id` `name`'s. `remove_hint`: the command that removes a face, with {id} to fill in,
    named when `name` has that photo enrolled already."""
    try:
        r = rec.move_face(face_id, name, allow_similar=allow_similar)
    except FaceConflict as exc:
        raise click.ClickException(f"cannot move face {face_id} to {exc.person!r}: that photo is enrolled for "
                                   f"them already; to drop this copy: {remove_hint.format(id=face_id)}") from None
    to = recognizer.validate_name(name)
    line = (f"face {face_id} ({r.source}) is {to}'s already; nothing changed" if r.person == to else
            f"moved face {face_id} ({r.source}) from {r.person} to {to}")
    _corrected(rec, {"moved_face": face_id, "from": r.person, "to": to, "photo": r.source}, line, as_json)


def export_people(rec, path: str, as_json: bool) -> None:
    rec.refresh()  # the gallery as it is now, not as it was when the model was opened
    out = archive.export_model(rec, path)
    click.echo(json.dumps(out, indent=2) if as_json else
               f"exported {out['faces']} faces of {len(out['people'])} people ({out['chips']} chips) to {path}")


def model_for_import(path: str, backbone: str | None, weights: str | None) -> tuple[str, str | None]:
    """The backbone and weights a model created for the archive at `path` gets (the archive's
    unless given); the archive is checked whole before any model is created or changed."""
    manifest = lifecycle.read_archive(path)
    backbone = backbone or manifest["backbone"]
    weights = weights or (manifest["weights"] if backbone == manifest["backbone"] else None)
    return backbone, weights


def import_people(rec, path: str, as_json: bool) -> None:
    """Add an archive's faces; people enrolled here already are skipped and named (exit 1)."""
    rep = archive.import_archive(rec, path)
    if as_json:
        click.echo(json.dumps(rep.to_dict(), indent=2))
    else:
        for person, n in rep.added.items():
            click.echo(f"imported {person} ({n} faces)")
        how = f"{rep.reembedded} re-embedded from their chips" if rep.reembedded else f"{rep.reused_vectors} vectors reused"
        click.echo(f"{sum(rep.added.values())} faces imported ({how})")
    for person in rep.clashes:
        click.echo(f"not imported: {person!r} is already enrolled here (rename one of them and import again)", err=True)
    if rep.clashes:
        raise SystemExit(1)


def make_chips(rec, as_json: bool) -> None:
    """Chips for faces enrolled before chips were kept; the faces that cannot get one (exit 1)."""
    failed = rec.make_chips()
    faces = rec.records()
    without = sum(not r.chip for r in faces)
    if as_json:
        click.echo(json.dumps({"faces": len(faces), "without_chip": without, "failed": failed}, indent=2))
    else:
        for line in failed:
            click.echo(f"no chip: {line}", err=True)
        click.echo(f"{len(faces) - without} of {len(faces)} faces have a chip")
    if failed:
        raise SystemExit(1)


# ---- the commands ---------------------------------------------------------------------------------
def _model_command(name: str, help: str):
    """A `people` subcommand with the options all take (--model, --json, --weights-dir, --gallery, --no-cache, -v)."""
    return subcommand(main, name, help, model_option, json_option, weights_dir_option, gallery_option, no_cache_option,
                      verbose_option)


def _open(model_dir, weights_dir, gallery, no_cache, verbose):
    start(verbose)
    return recognizer.open(model_dir, weights_dir=weights_dir, cache=not no_cache, gallery=gallery)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Who the model knows: list, rename, merge, remove, export, import (no photos enrolled)."""


@_model_command("list", "List enrolled people with their face counts, and the unknown threshold.")
def _list(model_dir, as_json, weights_dir, gallery, no_cache, verbose):
    with _open(model_dir, weights_dir, gallery, no_cache, verbose) as rec:
        show_people(rec, as_json, f"facetool people make-chips --model {shlex.quote(model_dir)}")


@_model_command("rename", "Rename OLD to NEW (NEW must not be enrolled: `people merge` joins two people).")
@click.argument("old")
@click.argument("new")
@allow_similar_option
def _rename(model_dir, as_json, weights_dir, gallery, no_cache, verbose, old, new, allow_similar):
    with _open(model_dir, weights_dir, gallery, no_cache, verbose) as rec:
        rename_person(rec, old, new, merge=False, allow_similar=allow_similar, as_json=as_json,
                      merge_hint=f"facetool people merge --model {shlex.quote(model_dir)} {{old}} {{new}}")


@_model_command("merge", "Merge OLD into NEW, both enrolled (one person enrolled under two names): OLD's faces become NEW's.")
@click.argument("old")
@click.argument("new")
def _merge(model_dir, as_json, weights_dir, gallery, no_cache, verbose, old, new):
    with _open(model_dir, weights_dir, gallery, no_cache, verbose) as rec:
        rename_person(rec, old, new, merge=True, allow_similar=False, as_json=as_json, merge_hint="")


@_model_command("remove", "Remove NAME and all their faces, chips and cached crops.")
@click.argument("name")
def _remove(model_dir, as_json, weights_dir, gallery, no_cache, verbose, name):
    with _open(model_dir, weights_dir, gallery, no_cache, verbose) as rec:
        remove_person(rec, name, as_json)


@_model_command("faces", "List NAME's faces with their ids (what remove-face and move-face take).")
@click.argument("name")
@click.option("--sheet", type=click.Path(dir_okay=False), help="Also write a PNG contact sheet of the faces, labelled by id.")
def _faces(model_dir, as_json, weights_dir, gallery, no_cache, verbose, name, sheet):
    with _open(model_dir, weights_dir, gallery, no_cache, verbose) as rec:
        show_faces(rec, name, sheet, as_json)


@_model_command("remove-face", "Remove one enrolled face (its id from `people faces`), with its chip and cached crops; "
                               "the person keeps their other faces.")
@click.argument("face_id", metavar="ID", type=int)
def _remove_face(model_dir, as_json, weights_dir, gallery, no_cache, verbose, face_id):
    with _open(model_dir, weights_dir, gallery, no_cache, verbose) as rec:
        remove_face(rec, face_id, as_json)


@_model_command("move-face", "Make one enrolled face (its id from `people faces`) NAME's: enrolled under the wrong person.")
@click.argument("face_id", metavar="ID", type=int)
@click.argument("name")
@allow_similar_option
def _move_face(model_dir, as_json, weights_dir, gallery, no_cache, verbose, face_id, name, allow_similar):
    with _open(model_dir, weights_dir, gallery, no_cache, verbose) as rec:
        move_face(rec, face_id, name, allow_similar=allow_similar, as_json=as_json,
                  remove_hint=f"facetool people remove-face --model {shlex.quote(model_dir)} {{id}}")


@_model_command("export", "Write every enrolled face (names, chips, vectors) to one archive FILE.")
@click.argument("file", type=click.Path(dir_okay=False))
def _export(model_dir, as_json, weights_dir, gallery, no_cache, verbose, file):
    with _open(model_dir, weights_dir, gallery, no_cache, verbose) as rec:
        export_people(rec, file, as_json)


@_model_command("import", "Add the faces of an export archive FILE (re-embedded from their chips on another model; "
                          "a new model gets the archive's backbone); people enrolled here already are skipped (exit 1).")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--backbone", type=click.Choice(["sface", "facenet"]), help="Backbone for a new model (default: the archive's).")
@click.option("--weights", help="facenet weights for a new model (default: the archive's).")
def _import(model_dir, as_json, weights_dir, gallery, no_cache, verbose, file, backbone, weights):
    start(verbose)
    backbone, weights = model_for_import(file, backbone, weights)
    with recognizer.create(model_dir, backbone=backbone, weights=weights, weights_dir=weights_dir, cache=not no_cache,
                           gallery=gallery) as rec:
        import_people(rec, file, as_json)


@_model_command("make-chips", "For a model made before chips were kept: make each face's chip from its photo where it "
                              "is still there; lists the faces that cannot get one (exit 1).")
def _make_chips(model_dir, as_json, weights_dir, gallery, no_cache, verbose):
    with _open(model_dir, weights_dir, gallery, no_cache, verbose) as rec:
        make_chips(rec, as_json)
