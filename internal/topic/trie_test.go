package topic

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

// mustAdd adds f to tr and fails the test on an error.
func mustAdd(tb testing.TB, tr *Trie, f string) bool {
	tb.Helper()
	added, err := tr.Add(f)
	if err != nil {
		tb.Fatalf("Add(%q): %v", f, err)
	}
	return added
}

// matchSet collects what MatchFunc reports for topic, failing on a filter reported twice.
func matchSet(tb testing.TB, tr *Trie, topic string) map[string]int {
	tb.Helper()
	got := map[string]int{}
	tr.MatchFunc(topic, func(filter string, count int) bool {
		if _, dup := got[filter]; dup {
			tb.Errorf("MatchFunc(%q) reported %q twice", topic, filter)
		}
		got[filter] = count
		return true
	})
	return got
}

func TestTrieMatchesTableOneFilterAtATime(t *testing.T) {
	for _, c := range matchCases {
		if ValidateFilter(c.filter) != nil {
			continue // "$share/..." is refused by Add; the matcher alone covers it
		}
		tr := NewTrie()
		mustAdd(t, tr, c.filter)
		if got := tr.Matches(c.topic); got != c.want {
			t.Errorf("trie{%q}.Matches(%q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
		want := map[string]int{}
		if c.want {
			want[c.filter] = 1
		}
		if got := matchSet(t, tr, c.topic); !maps.Equal(got, want) {
			t.Errorf("trie{%q}.MatchFunc(%q) = %v, want %v", c.filter, c.topic, got, want)
		}
	}
}

func TestTrieMatchesTableAllFilters(t *testing.T) {
	// Every filter of the table in one trie: for each topic, MatchFunc must report exactly the
	// filters the reference matcher accepts, with their counts (the table repeats filters),
	// which exercises overlapping branches.
	tr := NewTrie()
	counts := map[string]int{}
	for _, c := range matchCases {
		if ValidateFilter(c.filter) == nil {
			mustAdd(t, tr, c.filter)
			counts[c.filter]++
		}
	}
	for _, c := range matchCases {
		want := map[string]int{}
		for f, n := range counts {
			if Match(f, c.topic) {
				want[f] = n
			}
		}
		if got := matchSet(t, tr, c.topic); !maps.Equal(got, want) {
			t.Errorf("MatchFunc(%q) = %v, want %v", c.topic, got, want)
		}
		if got := tr.Matches(c.topic); got != (len(want) > 0) {
			t.Errorf("Matches(%q) = %v, want %v", c.topic, got, len(want) > 0)
		}
	}
}

func TestTrieReferenceCounting(t *testing.T) {
	tr := NewTrie()
	if !mustAdd(t, tr, "a/+/c") {
		t.Fatal("first Add did not report added")
	}
	if mustAdd(t, tr, "a/+/c") {
		t.Fatal("second Add reported added")
	}
	if got := tr.Count("a/+/c"); got != 2 {
		t.Fatalf("Count = %d, want 2", got)
	}
	if tr.Remove("a/+/c") {
		t.Fatal("Remove of one of two references reported removed")
	}
	if got, n := tr.Count("a/+/c"), tr.Len(); got != 1 || n != 1 {
		t.Fatalf("after one Remove: Count = %d, Len = %d, want 1, 1", got, n)
	}
	if !tr.Matches("a/b/c") {
		t.Fatal("filter with one reference left no longer matches")
	}
	if got := matchSet(t, tr, "a/b/c"); got["a/+/c"] != 1 {
		t.Fatalf("MatchFunc count = %v, want a/+/c:1", got)
	}
	if !tr.Remove("a/+/c") {
		t.Fatal("last Remove did not report removed")
	}
	if tr.Remove("a/+/c") {
		t.Fatal("Remove of an absent filter reported removed")
	}
	if tr.Len() != 0 || len(tr.Filters()) != 0 || tr.Count("a/+/c") != 0 || tr.Matches("a/b/c") {
		t.Fatalf("trie not empty: Len %d, Filters %v", tr.Len(), tr.Filters())
	}
	if got := tr.nodeCount(); got != 1 {
		t.Fatalf("nodeCount = %d after removing everything, want 1 (the root)", got)
	}
}

func TestTriePrunesOnlyWhatIsUnused(t *testing.T) {
	tr := NewTrie()
	for _, f := range []string{"a", "a/b", "a/b/c", "a/+/#", "#", "x//y"} {
		mustAdd(t, tr, f)
	}
	// root, a, a/b, a/b/c, a/+, a/+/#, #, x, x/, x//y
	if got := tr.nodeCount(); got != 10 {
		t.Fatalf("nodeCount = %d, want 10", got)
	}
	// "a/b" is an inner node: removing its filter keeps the path to "a/b/c".
	tr.Remove("a/b")
	if got := tr.nodeCount(); got != 10 || tr.Count("a/b/c") != 1 || tr.Matches("a/b") != true {
		t.Fatalf("after Remove(a/b): nodeCount %d, Count(a/b/c) %d", got, tr.Count("a/b/c"))
	}
	if got := matchSet(t, tr, "a/b"); !maps.Equal(got, map[string]int{"#": 1, "a/+/#": 1}) {
		t.Fatalf("MatchFunc(a/b) = %v", got)
	}
	tr.Remove("a/b/c") // prunes a/b/c and a/b
	tr.Remove("x//y")  // prunes x//y, x/ and x
	if got := tr.nodeCount(); got != 5 {
		t.Fatalf("nodeCount = %d, want 5 (root, a, a/+, a/+/#, #)", got)
	}
	want := []string{"#", "a", "a/+/#"}
	if got := slices.Sorted(slices.Values(tr.Filters())); !slices.Equal(got, want) {
		t.Fatalf("Filters = %v, want %v", got, want)
	}
	if tr.Len() != 3 {
		t.Fatalf("Len = %d, want 3", tr.Len())
	}
}

func TestTrieChurnDoesNotGrow(t *testing.T) {
	tr := NewTrie()
	mustAdd(t, tr, "keep/#")
	base := tr.nodeCount()
	for i := range 1000 {
		f := "test_1/" + strings.Repeat("x", i%7) + "/+/" + string(rune('a'+i%26))
		mustAdd(t, tr, f)
		mustAdd(t, tr, f)
		tr.Remove(f)
		if !tr.Remove(f) {
			t.Fatalf("Remove(%q) to zero reported false", f)
		}
	}
	if got := tr.nodeCount(); got != base || tr.Len() != 1 {
		t.Fatalf("after churn nodeCount = %d (want %d), Len = %d", got, base, tr.Len())
	}
	if tr.root.child("test_1") != nil {
		t.Fatal("pruned branch still linked from the root")
	}
}

func TestTrieAddRefusesInvalidFilters(t *testing.T) {
	tr := NewTrie()
	for _, f := range []string{"", "a/#/b", "a+", "#a", "a\x00", "$share/g/a", "\xff"} {
		added, err := tr.Add(f)
		if added || !errors.Is(err, ErrInvalidFilter) {
			t.Errorf("Add(%q) = %v, %v; want false, ErrInvalidFilter", f, added, err)
		}
	}
	if tr.Len() != 0 || tr.nodeCount() != 1 {
		t.Fatalf("invalid Adds changed the trie: Len %d, nodeCount %d", tr.Len(), tr.nodeCount())
	}
	// Lookups of invalid filters must be harmless too.
	for _, f := range []string{"a/#/b", "", "#/#"} {
		if tr.Count(f) != 0 || tr.Remove(f) {
			t.Errorf("Count/Remove(%q) on an empty trie", f)
		}
	}
}

func TestTrieKeepsNoReferenceToCallerBytes(t *testing.T) {
	// The filter usually is a slice of a packet buffer; holding on to it would keep the whole
	// buffer alive for as long as the subscription lives.
	packet := strings.Repeat("a/b/", 1000)
	tr := NewTrie()
	mustAdd(t, tr, packet[:3]) // "a/b"
	inPacket := func(s string) bool {
		p, start := uintptr(unsafe.Pointer(unsafe.StringData(s))), uintptr(unsafe.Pointer(unsafe.StringData(packet)))
		return p >= start && p < start+uintptr(len(packet))
	}
	if f := tr.Filters()[0]; f != "a/b" || inPacket(f) {
		t.Fatalf("stored filter %q aliases the caller's buffer", f)
	}
	tr.root.kids.eachLiteral(func(key string, _ *node) bool {
		if inPacket(key) {
			t.Fatalf("level key %q aliases the caller's buffer", key)
		}
		return true
	})
}

func TestMatchFuncStops(t *testing.T) {
	tr := NewTrie()
	for _, f := range []string{"#", "a/#", "a/+", "+/b", "a/b"} {
		mustAdd(t, tr, f)
	}
	calls := 0
	tr.MatchFunc("a/b", func(string, int) bool { calls++; return false })
	if calls != 1 {
		t.Fatalf("MatchFunc called fn %d times after it returned false, want 1", calls)
	}
	if got := matchSet(t, tr, "a/b"); len(got) != 5 {
		t.Fatalf("MatchFunc(a/b) = %v, want all 5 filters", got)
	}
}

func TestMatchingDoesNotAllocate(t *testing.T) {
	tr := NewTrie()
	for _, f := range []string{"test_1/1", "test_1/+/x", "sensors/#", "+/status", "$SYS/#"} {
		mustAdd(t, tr, f)
	}
	topics := []string{"test_1/1", "test_1/2/x", "sensors/a/b", "dev/status", "$SYS/x", "none/here/at/all"}
	count := 0
	fn := func(string, int) bool { count++; return true }
	allocs := testing.AllocsPerRun(100, func() {
		for _, topic := range topics {
			tr.Matches(topic)
			tr.MatchFunc(topic, fn)
		}
	})
	if allocs != 0 {
		t.Fatalf("matching allocates %v times per run, want 0", allocs)
	}
	if count == 0 {
		t.Fatal("no match reported at all")
	}
}

func TestSomeFilters(t *testing.T) {
	tr := NewTrie()
	for _, f := range []string{"a", "a/b", "a/+", "#", "c/d/e", "c/d/f"} {
		mustAdd(t, tr, f)
	}
	all := tr.SomeFilters(100)
	slices.Sort(all)
	if want := []string{"#", "a", "a/+", "a/b", "c/d/e", "c/d/f"}; !slices.Equal(all, want) {
		t.Fatalf("SomeFilters(100) = %q, want %q", all, want)
	}
	some := tr.SomeFilters(3)
	if len(some) != 3 {
		t.Fatalf("SomeFilters(3) = %q, want 3 filters", some)
	}
	for _, f := range some {
		if tr.Count(f) != 1 {
			t.Fatalf("SomeFilters(3) returned %q, not in the trie", f)
		}
	}
	if got := tr.SomeFilters(0); len(got) != 0 {
		t.Fatalf("SomeFilters(0) = %q", got)
	}
}
