package topic

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

// fuzzAlphabet is what random bytes are folded onto so that the fuzzer builds filters and
// topics full of levels, wildcards, '$' and empty levels instead of mostly opaque bytes.
const fuzzAlphabet = "ab$/+#/\n"

// fold maps every byte of s onto fuzzAlphabet.
func fold(s string) string {
	b := []byte(s)
	for i, c := range b {
		b[i] = fuzzAlphabet[int(c)%len(fuzzAlphabet)]
	}
	return string(b)
}

// FuzzTrieMatch builds a trie from newline-separated filters (valid ones only; a filter is
// added once per occurrence, and every third occurrence is removed again) and checks that
// Matches and MatchFunc agree with the reference Match on every filter, for the topic as given
// and for both inputs folded onto a small alphabet.
func FuzzTrieMatch(f *testing.F) {
	f.Add("a/b\na/+\n#\n+/+\na/#", "a/b")
	f.Add("a/#\n+/#\n$SYS/#", "$SYS/broker")
	f.Add("+/+\n/+\n+/\n//", "/")
	f.Add("a//b\na/+/b\na/#", "a//b")
	f.Add("test_1/1\ntest_1/1\ntest_1/1\ntest_1/+", "test_1/1")
	f.Add("#\n+\n+/#", "$")
	f.Add("a\nA\na/", "a/")
	f.Fuzz(func(t *testing.T, filters, topic string) {
		checkTrieAgainstMatch(t, filters, topic)
		checkTrieAgainstMatch(t, fold(filters), fold(topic))
	})
}

func checkTrieAgainstMatch(t *testing.T, filters, topic string) {
	tr := NewTrie()
	counts := map[string]int{}
	for i, f := range strings.Split(filters, "\n") {
		if ValidateFilter(f) != nil {
			continue
		}
		mustAdd(t, tr, f)
		counts[f]++
		if i%3 == 2 {
			tr.Remove(f)
			if counts[f]--; counts[f] == 0 {
				delete(counts, f)
			}
		}
	}
	want := map[string]int{}
	for f, n := range counts {
		if Match(f, topic) {
			want[f] = n
		}
	}
	if got := matchSet(t, tr, topic); !maps.Equal(got, want) {
		t.Fatalf("filters %q, topic %q: MatchFunc = %v, Match says %v", filters, topic, got, want)
	}
	if got := tr.Matches(topic); got != (len(want) > 0) {
		t.Fatalf("filters %q, topic %q: Matches = %v, Match says %v", filters, topic, got, want)
	}
	if tr.Len() != len(counts) {
		t.Fatalf("filters %q: Len = %d, want %d", filters, tr.Len(), len(counts))
	}
	for f := range counts {
		tr.Remove(f)
		for tr.Count(f) > 0 {
			tr.Remove(f)
		}
	}
	if tr.Len() != 0 || tr.nodeCount() != 1 {
		t.Fatalf("filters %q: removing all left Len %d, nodeCount %d", filters, tr.Len(), tr.nodeCount())
	}
}

// FuzzValidateFilter checks that validation never panics, that what it accepts the trie
// accepts and matches as Match does, and that topic names and filters agree where they
// overlap.
func FuzzValidateFilter(f *testing.F) {
	for _, c := range matchCases {
		f.Add(c.filter, c.topic)
	}
	f.Add("a/#/b", "a")
	f.Add("a+", "a+")
	f.Add("$share/g/a", "a")
	f.Add("a\x00", "a\x00")
	f.Fuzz(func(t *testing.T, filter, topic string) {
		for _, filter := range []string{filter, fold(filter)} {
			checkFilter(t, filter, topic)
		}
	})
}

func checkFilter(t *testing.T, filter, topic string) {
	err := ValidateFilter(filter)
	if err != nil && !errors.Is(err, ErrInvalidFilter) {
		t.Fatalf("ValidateFilter(%q) = %v, not wrapping ErrInvalidFilter", filter, err)
	}
	if terr := ValidateTopic(filter); terr == nil && err == nil {
		// A topic name is a filter without wildcards: it matches itself and nothing else
		// with a different spelling.
		if !Match(filter, filter) {
			t.Fatalf("Match(%q, itself) = false", filter)
		}
	} else if terr != nil && !errors.Is(terr, ErrInvalidTopic) {
		t.Fatalf("ValidateTopic(%q) = %v, not wrapping ErrInvalidTopic", filter, terr)
	}
	tr := NewTrie()
	added, addErr := tr.Add(filter)
	if (err == nil) != (addErr == nil) || added != (err == nil) {
		t.Fatalf("filter %q: ValidateFilter = %v but Add = %v, %v", filter, err, added, addErr)
	}
	if err != nil {
		return
	}
	if got, want := tr.Matches(topic), Match(filter, topic); got != want {
		t.Fatalf("filter %q, topic %q: trie says %v, Match says %v", filter, topic, got, want)
	}
	if tr.Count(filter) != 1 || !tr.Remove(filter) || tr.nodeCount() != 1 {
		t.Fatalf("filter %q: Count/Remove round trip failed", filter)
	}
}

// FuzzSplitShared checks that SplitShared never panics and that what it returns rebuilds
// the input.
func FuzzSplitShared(f *testing.F) {
	for _, s := range []string{"$share/g/a", "$share//a", "$share/g", "$share/g/a/#", "a/b", "$share/g/$share/h/a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		group, filter, shared, err := SplitShared(s)
		switch {
		case err != nil:
			if !errors.Is(err, ErrInvalidFilter) || shared || !strings.HasPrefix(s, sharePrefix) {
				t.Fatalf("SplitShared(%q) = %q, %q, %v, %v", s, group, filter, shared, err)
			}
		case shared:
			if "$share/"+group+"/"+filter != s || group == "" || strings.ContainsAny(group, "/+#") ||
				ValidateFilter(filter) != nil {
				t.Fatalf("SplitShared(%q) = %q, %q", s, group, filter)
			}
		default:
			if group != "" || filter != s || strings.HasPrefix(s, sharePrefix) {
				t.Fatalf("SplitShared(%q) = %q, %q, not shared", s, group, filter)
			}
		}
	})
}
