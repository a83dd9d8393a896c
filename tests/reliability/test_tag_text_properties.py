"""Any tag text either round-trips through a sidecar or is refused with a message; what is written
always parses (issue 29's property-based suite)."""

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mlcnn_core import sidecars

# Text a person, another tool or a model might put in a tag: any code point (surrogates and
# control characters included), weighted toward the characters that break formats.
AWKWARD = list(",\n\r\t\x00\x01\x07\x1f\x7f\x85\u2028\ufeff\ufffe\uffff<>&\"'|/.!?]]>") + [
    "<!--",
    "-->",
    "\u202e",
    "🐱",
    "日本",
    "&amp;",
    "\ud800",
]
tag_text = st.one_of(
    st.text(st.characters(codec=None), max_size=20),
    st.lists(st.sampled_from(AWKWARD) | st.text(max_size=3), max_size=6).map("".join),
)
tag_lists = st.lists(tag_text, max_size=8)
FUZZ = settings(
    max_examples=int(os.environ.get("MLCNN_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

FOREIGN_XMP = (Path(__file__).parents[1] / "test_sidecars.py").read_text(encoding="utf-8")
FOREIGN_XMP = FOREIGN_XMP.split('DIGIKAM_XMP = textwrap.dedent(\n    """\\\n', 1)[1].split('"""', 1)[0]
FOREIGN_XMP = "\n".join(line[4:] for line in FOREIGN_XMP.splitlines()) + "\n"


def comma_line_reads_back(tags: list[str]) -> bool:
    return all("," not in t for t in tags) and sidecars.parse_tag_text(", ".join(tags)) == tags


@FUZZ
@given(tags=tag_lists)
@example(tags=["ctl\x01x", "n\x00ul"])
@example(tags=["hello, world"])
@example(tags=["etc."])
def test_txt_round_trips_or_refuses(tmp_path, tags):
    path = tmp_path / "a.txt"
    path.unlink(missing_ok=True)
    expected = sidecars.normalize_tags(tags)
    try:
        written = sidecars.write_txt(path, tags, policy="replace")
    except sidecars.SidecarError as exc:
        assert str(path) in str(exc)
        assert not comma_line_reads_back(expected), "refused a caption that can be written"
        assert not path.exists()
        return
    assert written == expected
    assert sidecars.read_txt(path) == expected
    path.read_bytes().decode("utf-8")  # strict: the file is UTF-8


@FUZZ
@given(existing=st.lists(tag_text, max_size=4), lines=st.lists(tag_text, max_size=3), tags=tag_lists)
def test_txt_rewrite_of_any_file_reads_back(tmp_path, existing, lines, tags):
    path = tmp_path / "a.txt"
    text = "\n".join([", ".join(existing), *lines])
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    before = path.read_bytes()
    try:
        written = sidecars.write_txt(path, tags, policy="merge")
    except sidecars.SidecarError as exc:
        assert str(path) in str(exc)
        assert path.read_bytes() == before
        return
    assert sidecars.read_txt(path) == written


@FUZZ
@given(tags=tag_lists)
@example(tags=["]]>", "<!-- x -->", "a & b", "\ud800"])
def test_new_xmp_round_trips_and_parses(tmp_path, tags):
    path = tmp_path / "a.jpg.xmp"
    path.unlink(missing_ok=True)
    written = sidecars.write_xmp(path, tags, policy="merge")
    ET.parse(path)
    assert written == sidecars.normalize_tags(tags)
    assert sidecars.read_xmp(path) == written


@FUZZ
@given(tags=tag_lists, policy=st.sampled_from(sidecars.WRITE_POLICIES))
def test_foreign_xmp_keeps_its_fields_and_parses(tmp_path, tags, policy):
    path = tmp_path / "a.jpg.xmp"
    path.write_text(FOREIGN_XMP, encoding="utf-8")
    written = sidecars.write_xmp(path, tags, policy=policy)
    root = ET.parse(path).getroot()
    assert sidecars.read_xmp(path) == written
    desc = root.find(".//{http://www.w3.org/1999/02/22-rdf-syntax-ns#}Description")
    assert desc.get("{http://ns.adobe.com/xap/1.0/}Rating") == "4"
    assert path.read_text(encoding="utf-8").rstrip().endswith('<?xpacket end="w"?>')


@pytest.mark.parametrize("tag", ["\x00", "\x01\x07", " \t\n "])
def test_a_tag_of_nothing_but_control_characters_is_dropped(tmp_path, tag):
    assert sidecars.normalize_tag(tag) == ""
    assert sidecars.write_xmp(tmp_path / "a.jpg.xmp", [tag, "kept"], policy="merge") == ["kept"]
