package topic

import (
	"errors"
	"strings"
	"testing"
)

// matchCase is one (filter, topic, match?) row; the same table drives Match and the Trie.
type matchCase struct {
	filter, topic string
	want          bool
}

var matchCases = []matchCase{
	// Exact levels, compared byte for byte.
	{"a", "a", true},
	{"a", "b", false},
	{"a/b", "a/b", true},
	{"a/b", "a/c", false},
	{"a/b", "a", false},
	{"a", "a/b", false},
	{"A/b", "a/b", false}, // case-sensitive [MQTT-4.7.3-4]
	{"a/B", "a/b", false},
	{"a b/c", "a b/c", true}, // spaces are ordinary characters
	{"température/é", "température/é", true},
	{"test_1/42", "test_1/42", true},
	{"test_1/42", "test_1/420", false},
	// Empty levels are levels.
	{"a//b", "a//b", true},
	{"a//b", "a/b", false},
	{"a/b", "a//b", false},
	{"/", "/", true},
	{"/a", "/a", true},
	{"/a", "a", false},
	{"a/", "a/", true},
	{"a/", "a", false},
	{"a", "a/", false},
	// '+' matches exactly one level, an empty one included.
	{"+", "a", true},
	{"+", "a/b", false},
	{"+", "/", false},
	{"a/+", "a/b", true},
	{"a/+", "a/", true},
	{"a/+", "a", false},
	{"a/+", "a/b/c", false},
	{"+/+", "/", true},
	{"+/+", "a/b", true},
	{"+/+", "a", false},
	{"/+", "/x", true},
	{"/+", "x", false},
	{"a/+/c", "a/b/c", true},
	{"a/+/c", "a//c", true},
	{"a/+/c", "a/b/d", false},
	{"a/+/c", "a/c", false},
	{"+/b/+", "a/b/c", true},
	{"+/+/+", "a/b", false},
	// '#' matches any number of levels, zero included: "a/#" matches "a" [MQTT-4.7.1-2].
	{"#", "a", true},
	{"#", "a/b/c", true},
	{"#", "/", true},
	{"#", "a/", true},
	{"a/#", "a", true},
	{"a/#", "a/", true},
	{"a/#", "a/b", true},
	{"a/#", "a/b/c", true},
	{"a/#", "b", false},
	{"a/#", "ab", false},
	{"a/#", "b/a", false},
	{"a/b/#", "a", false},
	{"a/b/#", "a/b", true},
	{"+/#", "a", true},
	{"+/#", "a/b/c", true},
	{"a/+/#", "a/b", true},
	{"a/+/#", "a", false},
	{"/#", "/", true},
	{"/#", "a", false},
	// '$' topics never match a filter whose first level is a wildcard [MQTT-4.7.2-1].
	{"#", "$SYS/broker/load", false},
	{"#", "$SYS", false},
	{"+", "$SYS", false},
	{"+/broker/#", "$SYS/broker/x", false},
	{"+/#", "$x", false},
	{"$SYS/#", "$SYS/broker/load", true},
	{"$SYS/#", "$SYS", true},
	{"$SYS/+/load", "$SYS/broker/load", true},
	{"$SYS/broker/load", "$SYS/broker/load", true},
	{"$share/g/a", "$share/g/a", true}, // a literal level like any other in the matcher
	// '$' further down is an ordinary character.
	{"a/#", "a/$b", true},
	{"a/+", "a/$b", true},
	{"+/$b", "a/$b", true},
}

func TestMatch(t *testing.T) {
	if len(matchCases) < 40 {
		t.Fatalf("only %d match cases", len(matchCases))
	}
	for _, c := range matchCases {
		if got := Match(c.filter, c.topic); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

func TestMatchCasesAreValid(t *testing.T) {
	// The table must speak about real MQTT inputs, or the trie and matcher could agree on
	// nonsense; "$share/g/a" is the one filter kept as a literal-level example.
	for _, c := range matchCases {
		if err := ValidateFilter(c.filter); err != nil && c.filter != "$share/g/a" {
			t.Errorf("filter %q: %v", c.filter, err)
		}
		if err := ValidateTopic(c.topic); err != nil {
			t.Errorf("topic %q: %v", c.topic, err)
		}
	}
}

func TestValidateFilter(t *testing.T) {
	cases := []struct {
		filter string
		ok     bool
	}{
		{"a", true},
		{"a/b/c", true},
		{"#", true},
		{"+", true},
		{"a/#", true},
		{"a/+/b", true},
		{"+/+/#", true},
		{"/", true},
		{"//", true},
		{"a b", true},
		{" ", true},
		{"$SYS/#", true},
		{"$share", false},
		{"$share/g/a", false},
		{"$shared/a", true},
		{"a/$share/b", true},
		{"é/ü", true},
		{strings.Repeat("a", maxLen), true},
		{strings.Repeat("a", maxLen+1), false},
		{"", false},
		{"a/#/b", false},
		{"#/a", false},
		{"##", false},
		{"#a", false},
		{"a#", false},
		{"a/b#", false},
		{"a+", false},
		{"+a", false},
		{"a/+b/c", false},
		{"++", false},
		{"a\x00b", false},
		{"\x00", false},
		{"a/\xff", false},
		{"\xed\xa0\x80", false}, // a UTF-16 surrogate encoded in UTF-8 [MQTT-1.5.3-1]
	}
	for _, c := range cases {
		err := ValidateFilter(c.filter)
		if (err == nil) != c.ok {
			t.Errorf("ValidateFilter(%.20q) = %v, want ok=%v", c.filter, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidFilter) {
			t.Errorf("ValidateFilter(%.20q) = %v, does not wrap ErrInvalidFilter", c.filter, err)
		}
	}
}

func TestValidateTopic(t *testing.T) {
	cases := []struct {
		topic string
		ok    bool
	}{
		{"a", true},
		{"a/b", true},
		{"/", true},
		{"a//b", true},
		{"a b/c d", true},
		{" ", true},
		{"$SYS/broker/load", true},
		{"$share/g/a", true},
		{"température", true},
		{strings.Repeat("a", maxLen), true},
		{strings.Repeat("a/", maxLen/2) + "a", true},
		{strings.Repeat("a", 64*1024), false},
		{"", false},
		{"a/+", false},
		{"a/#", false},
		{"+", false},
		{"#", false},
		{"a+b", false},
		{"a\x00", false},
		{"\xc3", false},
	}
	for _, c := range cases {
		err := ValidateTopic(c.topic)
		if (err == nil) != c.ok {
			t.Errorf("ValidateTopic(%.20q) = %v, want ok=%v", c.topic, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("ValidateTopic(%.20q) = %v, does not wrap ErrInvalidTopic", c.topic, err)
		}
	}
}

func TestErrorQuotesAShortPrefix(t *testing.T) {
	err := ValidateTopic(strings.Repeat("x", 64*1024))
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("error for a 64 KiB topic: %.300v", err)
	}
}

func TestSplitShared(t *testing.T) {
	cases := []struct {
		in            string
		group, filter string
		shared, bad   bool
	}{
		{in: "a/b", filter: "a/b"},
		{in: "#", filter: "#"},
		{in: "$share", filter: "$share"},
		{in: "$shared/g/a", filter: "$shared/g/a"},
		{in: "$SYS/#", filter: "$SYS/#"},
		{in: "$share/g/a", group: "g", filter: "a", shared: true},
		{in: "$share/g/a/b/#", group: "g", filter: "a/b/#", shared: true},
		{in: "$share/grp/+", group: "grp", filter: "+", shared: true},
		{in: "$share/g//", group: "g", filter: "/", shared: true},
		{in: "$share/g/$SYS/#", group: "g", filter: "$SYS/#", shared: true},
		{in: "$share/", bad: true},
		{in: "$share//a", bad: true},
		{in: "$share/g", bad: true},
		{in: "$share/g/", bad: true},
		{in: "$share/g+/a", bad: true},
		{in: "$share/#/a", bad: true},
		{in: "$share/g/a/#/b", bad: true},
		{in: "$share/g/a\x00", bad: true},
		{in: "$share/g/$share/h/a", bad: true},
	}
	for _, c := range cases {
		group, filter, shared, err := SplitShared(c.in)
		if c.bad {
			if !errors.Is(err, ErrInvalidFilter) {
				t.Errorf("SplitShared(%q) err = %v, want ErrInvalidFilter", c.in, err)
			}
			continue
		}
		if err != nil || group != c.group || filter != c.filter || shared != c.shared {
			t.Errorf("SplitShared(%q) = (%q, %q, %v, %v), want (%q, %q, %v, nil)",
				c.in, group, filter, shared, err, c.group, c.filter, c.shared)
		}
	}
}
