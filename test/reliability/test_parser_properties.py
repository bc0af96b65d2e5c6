"""Property-based tests (hypothesis) of the parsers of the model's answers: any text is read without raising, and
what `make_caption` / `alert_answer` write is read back exactly."""
from hypothesis import given, settings
from hypothesis import strategies as st

from vila_ros.tasks import (
    CATEGORY_NAMES,
    EVENT_SENTENCES,
    LIGHT_COLOURS,
    NUMBER_WORDS,
    ROAD_TIMES,
    ROAD_WEATHERS,
    SIGNS,
    WAREHOUSE_LIGHTING,
    alert_answer,
    caption_attributes,
    make_caption,
    parse_categories,
    parse_count,
    parse_yes_no,
)

SETTINGS = settings(max_examples=200, deadline=None)

# Text that looks like answers (vocabulary words, punctuation, digits) as well as arbitrary unicode.
WORDS = (["yes", "no", "none", "a", "an", "the", "and", "light", "sign", "car", "cars", "people", "box", "road",
          "warehouse", "aisle", "night", "dim", "rain", "fog", ",", ".", "-", "_", " ", "\n", "7", "0", "İ", "ß"]
         + list(NUMBER_WORDS) + list(CATEGORY_NAMES) + [c.replace("_", " ") for c in CATEGORY_NAMES]
         + list(EVENT_SENTENCES.values()))
answers = st.one_of(st.text(max_size=300),
                    st.lists(st.sampled_from(WORDS), max_size=30).map(" ".join),
                    st.lists(st.sampled_from(WORDS), max_size=30).map("".join))


@SETTINGS
@given(text=answers)
def test_parsers_never_raise_and_return_their_types(text):
    assert parse_yes_no(text) in (True, False, None)
    categories = parse_categories(text)
    assert set(categories) <= set(CATEGORY_NAMES) and len(categories) == len(set(categories))
    count = parse_count(text)
    assert count is None or (isinstance(count, int) and count >= 0)
    attrs = caption_attributes(text)
    assert isinstance(attrs, dict)


def test_parsers_accept_none_and_empty():
    for text in (None, "", "   ", "\x00"):
        assert parse_yes_no(text) is None
        assert parse_categories(text) == []
        assert parse_count(text) is None
        assert caption_attributes(text) == {}


@SETTINGS
@given(word=st.sampled_from(["yes", "Yes.", "YES!", "yeah", "y", "no", "No,", "nope", "n"]), rest=st.text(max_size=50))
def test_yes_no_reads_the_first_word(word, rest):
    expected = word.lower().strip(".,!") in {"yes", "yeah", "y"}
    assert parse_yes_no(f"{word} {rest}") is expected


@SETTINGS
@given(n=st.integers(0, 10**6), prefix=st.sampled_from(["", "There are ", "I count ", "Answer: "]))
def test_count_round_trip(n, prefix):
    assert parse_count(f"{prefix}{n}.") == n
    if n < len(NUMBER_WORDS):
        assert parse_count(f"{prefix}{NUMBER_WORDS[n]}.") == n


@SETTINGS
@given(categories=st.lists(st.sampled_from(CATEGORY_NAMES), max_size=12))
def test_alert_answer_round_trip(categories):
    expected = [name for name in CATEGORY_NAMES if name in set(categories)]
    answer = alert_answer(categories)
    assert parse_categories(answer) == expected
    assert parse_categories(answer.upper().replace("_", " ")) == expected  # model spells with spaces / capitals


counts = st.integers(0, 12)
road_events = sorted({c for (f, c) in EVENT_SENTENCES if f == "road"} | {"none"})
warehouse_events = sorted({c for (f, c) in EVENT_SENTENCES if f == "warehouse"} | {"none"})
road_attrs = st.fixed_dictionaries({
    "family": st.just("road"), "time": st.sampled_from(ROAD_TIMES), "weather": st.sampled_from(ROAD_WEATHERS),
    "cars": counts, "pedestrians": counts, "cyclists": counts, "animals": counts, "boxes": counts,
    "sign": st.sampled_from(SIGNS), "light": st.sampled_from(LIGHT_COLOURS), "event": st.sampled_from(road_events)})
warehouse_attrs = st.fixed_dictionaries({
    "family": st.just("warehouse"), "lighting": st.sampled_from(WAREHOUSE_LIGHTING), "people": counts,
    "forklifts": counts, "boxes": counts, "event": st.sampled_from(warehouse_events)})


@SETTINGS
@given(attrs=st.one_of(road_attrs, warehouse_attrs))
def test_caption_round_trip(attrs):
    caption = make_caption(attrs)
    assert caption_attributes(caption) == attrs
    without_event = dict(attrs)
    del without_event["event"]
    assert caption_attributes(make_caption(attrs, include_event=False)) == without_event


@SETTINGS
@given(attrs=st.one_of(road_attrs, warehouse_attrs), junk=st.text(max_size=80))
def test_caption_with_trailing_junk_never_raises(attrs, junk):
    attrs_read = caption_attributes(make_caption(attrs) + " " + junk)
    assert attrs_read.get("family") == attrs["family"]
