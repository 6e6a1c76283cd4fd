"""``mqttfast.topic_matches(filter, topic)``: MQTT 3.1.1 section 4.7 (and 5.0 section 4.7/4.8.2)."""
from __future__ import annotations

import pytest

import mqttfast
from mqttfast.errors import InvalidTopic
from mqttfast.wire import topic_matches, validate_topic_filter

# (filter, topic, matches)
SPEC_EXAMPLES = [
    # 4.7.1.2 multi-level wildcard: "sport/tennis/player1/#"
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),  # "#" includes the parent level
    ("#", "sport/tennis", True),
    ("#", "anything", True),
    ("#", "/", True),
    # 4.7.1.3 single-level wildcard
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),  # an empty level is a level
    ("+", "sport", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+/tennis/#", "sport/tennis/player1", True),
    ("+/tennis/#", "sport/tennis", True),
    ("+/tennis/#", "sport/golf", False),
    # 4.7.2 topics beginning with $
    ("#", "$SYS/broker/clients", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("$SYS/#", "$SYS", True),
    ("+", "$SYS", False),
]

MORE = [
    ("a/b/c", "a/b/c", True),
    ("a/b/c", "a/b", False),
    ("a/b", "a/b/c", False),
    ("a/b/c", "a/b/d", False),
    ("A/b", "a/b", False),  # case-sensitive
    ("a/+/c", "a/b/c", True),
    ("a/+/c", "a//c", True),
    ("a/+/c", "a/b/d", False),
    ("a/+/+", "a/b", False),
    ("a/#", "a", True),
    ("a/#", "a/", True),
    ("a/#", "ab", False),
    ("a/#", "b/a", False),
    ("+/#", "a", True),
    ("+/#", "a/b/c", True),
    ("/#", "/a", True),
    ("/#", "a", False),
    ("+/+", "a", False),
    ("#", "a/$b", True),  # only a leading $ is special
    ("a/+", "a/$b", True),
    ("$share-not/x", "$share-not/x", True),
    ("é/日本/+", "é/日本/x", True),
    ("/", "/", True),
    ("a//b", "a//b", True),
    ("a//b", "a/b", False),
]

SHARED = [
    ("$share/group/sport/#", "sport/tennis", True),
    ("$share/group/sport/#", "sport", True),
    ("$share/g/+", "a", True),
    ("$share/g/+", "a/b", False),
    ("$share/g/#", "$SYS/x", False),
    ("$share/g/$SYS/#", "$SYS/x", True),
    ("$share/g/a/b", "a/b", True),
    ("$share/g/a/b", "$share/g/a/b", False),
]


@pytest.mark.parametrize("topic_filter, topic, expected", SPEC_EXAMPLES + MORE + SHARED,
                         ids=[f"{f}|{t}" for f, t, _ in SPEC_EXAMPLES + MORE + SHARED])
def test_topic_matches(topic_filter, topic, expected):
    assert topic_matches(topic_filter, topic) is expected
    assert topic_matches(topic_filter, topic) is expected  # the cached path gives the same answer


@pytest.mark.parametrize("topic_filter", ["", "a/#/b", "a#", "#/", "a/b+", "+a/b", "a/\x00",
                                          "$share/g", "$share//a", "$share/g+/a", "$share/g/",
                                          "a/#/#"])
def test_invalid_filters_raise(topic_filter):
    with pytest.raises(InvalidTopic):
        topic_matches(topic_filter, "a/b")
    with pytest.raises(InvalidTopic):  # and again: an invalid filter is not cached as valid
        topic_matches(topic_filter, "a/b")


def test_arguments_must_be_str():
    with pytest.raises(TypeError, match="topic filter must be str"):
        topic_matches(b"a/b", "a/b")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="topic must be str"):
        topic_matches("a/b", b"a/b")  # type: ignore[arg-type]


def test_a_wildcard_topic_never_matches_literally():
    # A received topic cannot contain wildcards; a filter's '+' is not a literal '+'.
    assert topic_matches("a/+", "a/+") is True  # one level, whatever its text
    assert topic_matches("a/b", "a/+") is False


def test_exported_from_the_package():
    assert mqttfast.topic_matches is topic_matches
    assert "topic_matches" in mqttfast.__all__


def test_many_filters_stay_correct_past_the_cache():
    # More distinct filters than any cache holds: answers do not depend on what was evicted.
    for i in range(5000):
        assert topic_matches(f"dev/{i}/+", f"dev/{i}/temp")
        assert not topic_matches(f"dev/{i}/+", f"dev/{i + 1}/temp")
    assert topic_matches("dev/0/+", "dev/0/x")


def _reference(topic_filter: str, topic: str) -> bool:
    """The rules of 4.7, level by level, written for clarity rather than speed."""
    if topic_filter.startswith("$share/"):
        topic_filter = topic_filter.split("/", 2)[2]
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    want, got = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(got) or (level != "+" and level != got[i]):
            return False
    return len(got) == len(want)


def test_agrees_with_a_level_by_level_reference():
    # Every combination of a few levels: the regex compilation must give the rule's answer.
    import itertools

    levels = ["a", "b", "", "$x", "+", "#", "a.b", "(", "\n"]
    filters, topics = set(), set()
    for n in (1, 2, 3):
        for combo in itertools.product(levels, repeat=n):
            joined = "/".join(combo)
            if "+" not in combo and "#" not in combo:
                topics.add(joined)
            for f in (joined, "$share/g/" + joined):
                try:
                    validate_topic_filter(f)
                except InvalidTopic:
                    continue
                filters.add(f)
    assert len(filters) > 500 and len(topics) > 300
    for f in sorted(filters):
        for t in sorted(topics):
            assert topic_matches(f, t) is _reference(f, t), (f, t)
