import numpy as np
import pytest

from metadiff_jax.data import glyph_render, glyphs, lookalikes

ALL = glyph_render.list_codepoints(glyph_render.kanjivg_dir())
KNOWN = ["口ロ", "工エ", "力カ", "一ー", "夕タ"]


def group_of(groups):
    return {c: i for i, group in enumerate(groups) for c in group}


def test_known_lookalikes_are_found_from_their_renders_and_distinct_characters_are_not():
    characters = sorted({ord(c) for pair in KNOWN for c in pair} | {ord(c) for c in "水火木金土日月山川人入"})
    where = group_of(lookalikes.lookalike_groups(characters))
    for a, b in KNOWN:
        assert where[ord(a)] == where[ord(b)], (a, b)
    for a, b in ["水火", "人入", "日月", "山川", "口日"]:
        assert where[ord(a)] != where[ord(b)], (a, b)


def test_coverage_is_symmetric_and_a_render_covers_itself():
    masks = np.stack([lookalikes.canonical_render(glyph_render.load_strokes(str(glyph_render.kanjivg_dir()), ord(c))) for c in "口ロ愛"])
    coverage = lookalikes._mutual_coverage(masks, 1)
    np.testing.assert_array_equal(coverage, coverage.T)
    np.testing.assert_array_equal(np.diag(coverage), 1.0)
    assert coverage[0, 1] > 0.9 and coverage[0, 2] < 0.5


@pytest.mark.parametrize("name", ["small", "mini_28px", "28px", "84px"])
def test_no_group_of_lookalikes_straddles_two_splits(name):
    config = next(c for c in glyphs.KanjivgGlyphs.BUILDER_CONFIGS if c.name == name)
    split = glyphs.split_codepoints(config, ALL)
    chosen = sorted(c for codepoints in split.values() for c in codepoints)
    split_of = {c: s for s, codepoints in split.items() for c in codepoints}
    groups = lookalikes.lookalike_groups(chosen)
    for group in groups:
        assert len({split_of[c] for c in group}) == 1, [chr(c) for c in group]
    if name == "28px":  # every character: the known pairs are all there, each pair in one split
        for a, b in KNOWN:
            assert split_of[ord(a)] == split_of[ord(b)]
        assert sum(len(g) for g in groups if len(g) > 1) > 500  # kana/kanji pairs, variants, dense families


def test_mini_config_has_minis_shape():
    config = next(c for c in glyphs.KanjivgGlyphs.BUILDER_CONFIGS if c.name == "mini_28px")
    split = glyphs.split_codepoints(config, ALL)
    assert {s: len(c) for s, c in split.items()} == {"train": 64, "validation": 16, "test": 20}
    assert config.drawers == 600 and config.jitter == glyph_render.hard_jitter(glyphs.MINI_DIFFICULTY)
