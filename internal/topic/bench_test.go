package topic

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// benchSizes are the trie sizes every benchmark runs at.
var benchSizes = []struct {
	name string
	n    int
}{{"10", 10}, {"10k", 10_000}, {"1M", 1_000_000}}

// benchFilter returns the i-th filter of a realistic mix: mostly exact per-device topics
// (test_<k>/<i>), some with a '+' level, a few '#' subtrees and a few filters starting with '+'.
func benchFilter(i int) string {
	k, n := strconv.Itoa(i%8), strconv.Itoa(i)
	switch r := i % 100; {
	case r < 90:
		return "test_" + k + "/" + n
	case r < 95:
		return "test_" + k + "/" + n + "/+"
	case r < 98:
		return "sensors/" + n + "/#"
	default:
		return "+/" + n + "/status"
	}
}

// benchTopics returns count topic names for a trie of n benchFilters: about half match a
// filter, the others name devices nobody subscribed to.
func benchTopics(n, count int) []string {
	rng := rand.New(rand.NewPCG(1, 2))
	topics := make([]string, count)
	for i := range topics {
		j := strconv.Itoa(rng.IntN(2 * n))
		k := strconv.Itoa(rng.IntN(8))
		switch rng.IntN(10) {
		case 0:
			topics[i] = "sensors/" + j + "/temp"
		case 1:
			topics[i] = "room/" + j + "/status"
		case 2:
			topics[i] = "test_" + k + "/" + j + "/x"
		default:
			topics[i] = "test_" + k + "/" + j
		}
	}
	return topics
}

// benchTries caches one trie per size: building 1M filters takes seconds, and the Add and
// Remove benchmarks give the trie back as they found it.
var benchTries = map[int]*Trie{}

func benchTrie(b *testing.B, n int) *Trie {
	b.Helper()
	if tr, ok := benchTries[n]; ok {
		return tr
	}
	tr := NewTrie()
	for i := range n {
		if _, err := tr.Add(benchFilter(i)); err != nil {
			b.Fatal(err)
		}
	}
	benchTries[n] = tr
	return tr
}

// freshFilters returns count filters that are not in a trie of n benchFilters.
func freshFilters(n, count int) []string {
	out := make([]string, count)
	for i := range out {
		out[i] = benchFilter(n + i)
	}
	return out
}

// benchChurn measures Add (timeAdd) or Remove on a trie of n filters. So that the trie keeps
// its size instead of growing by b.N, it works in batches of fresh filters — at most
// max(n/10, 100) — and undoes each batch off the clock: the trie always holds between n and
// n+batch filters.
func benchChurn(b *testing.B, n int, timeAdd bool) {
	tr := benchTrie(b, n)
	filters := freshFilters(n, max(n/10, 100))
	add := func(batch []string) {
		for _, f := range batch {
			if added, err := tr.Add(f); !added || err != nil {
				b.Fatalf("Add(%q) = %v, %v", f, added, err)
			}
		}
	}
	remove := func(batch []string) {
		for _, f := range batch {
			if !tr.Remove(f) {
				b.Fatalf("Remove(%q) = false", f)
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += len(filters) {
		batch := filters[:min(len(filters), b.N-done)]
		if timeAdd {
			add(batch)
			b.StopTimer()
			remove(batch)
		} else {
			b.StopTimer()
			add(batch)
			b.StartTimer()
			remove(batch)
			b.StopTimer()
		}
		b.StartTimer()
	}
}

func BenchmarkAdd(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) { benchChurn(b, size.n, true) })
	}
}

func BenchmarkRemove(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) { benchChurn(b, size.n, false) })
	}
}

// matchSink keeps the compiler from discarding match results.
var matchSink int

func BenchmarkMatches(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			tr := benchTrie(b, size.n)
			topics := benchTopics(size.n, 1024)
			b.ReportAllocs()
			b.ResetTimer()
			hits := 0
			for i := range b.N {
				if tr.Matches(topics[i&1023]) {
					hits++
				}
			}
			matchSink += hits
		})
	}
}

func BenchmarkMatchFunc(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(size.name, func(b *testing.B) {
			tr := benchTrie(b, size.n)
			topics := benchTopics(size.n, 1024)
			refs := 0
			count := func(_ string, n int) bool { refs += n; return true }
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				tr.MatchFunc(topics[i&1023], count)
			}
			matchSink += refs
		})
	}
}

// BenchmarkTrieMemory reports the heap a trie holds per filter for a fleet's
// filter shapes: one command topic per device, and one leaf per device.
func BenchmarkTrieMemory(b *testing.B) {
	for _, shape := range []string{"devices/%d/cmd", "bench/interest/%d"} {
		b.Run(strings.SplitN(shape, "/", 2)[0], func(b *testing.B) {
			const n = 100000
			filters := make([]string, n)
			for i := range filters {
				filters[i] = fmt.Sprintf(shape, i)
			}
			var perFilter float64
			for range b.N {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				tr := NewTrie()
				for _, f := range filters {
					if _, err := tr.Add(f); err != nil {
						b.Fatal(err)
					}
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				perFilter = float64(after.HeapAlloc-before.HeapAlloc) / n
				runtime.KeepAlive(tr)
			}
			b.ReportMetric(perFilter, "B/filter")
		})
	}
}
