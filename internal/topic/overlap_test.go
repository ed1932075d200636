package topic

import (
	"strings"
	"testing"
)

// smallUniverse returns every filter of up to three levels over a tiny
// alphabet and every topic name of up to four, so overlap can be decided by
// brute force.
func smallUniverse() (filters, topics []string) {
	levels := []string{"a", "b", "$s", ""}
	var build func(prefix []string, depth int, wild bool)
	build = func(prefix []string, depth int, wild bool) {
		if len(prefix) > 0 {
			s := strings.Join(prefix, "/")
			if wild {
				if ValidateFilter(s) == nil {
					filters = append(filters, s)
				}
			} else if ValidateTopic(s) == nil {
				topics = append(topics, s)
			}
		}
		if depth == 0 {
			return
		}
		next := levels
		if wild {
			next = append([]string{"+", "#"}, levels...)
		}
		for _, l := range next {
			if len(prefix) > 0 && prefix[len(prefix)-1] == "#" {
				return
			}
			build(append(append([]string(nil), prefix...), l), depth-1, wild)
		}
	}
	build(nil, 3, true)
	build(nil, 4, false)
	// The empty name is no valid topic, but "+" and "/#" both match it; a
	// conservative answer there costs the caller nothing.
	return filters, append(topics, "")
}

func TestOverlapsMatchesBruteForce(t *testing.T) {
	filters, topics := smallUniverse()
	for _, g := range filters {
		trie := NewTrie()
		if _, err := trie.Add(g); err != nil {
			t.Fatal(err)
		}
		for _, f := range filters {
			want := false
			for _, tp := range topics {
				if Match(f, tp) && Match(g, tp) {
					want = true
					break
				}
			}
			if got := trie.Overlaps(f); got != want {
				t.Fatalf("trie {%q}.Overlaps(%q) = %v, want %v", g, f, got, want)
			}
		}
	}
}
