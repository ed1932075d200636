package forward

import (
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// TestEachWantedIsTheUnion: after random interest changes (additions,
// removals, replacements, shared subscriptions, invalid filters), the
// filters EachWanted reports are exactly the union of every peer's
// advertised filters, shared ones by their filter part.
func TestEachWantedIsTheUnion(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	peers := []string{"a", "b", "c"}
	r := NewRouter(peers, true)
	pool := []string{"x/1", "x/+", "#", "y/#", "$share/g/x/1", "$share/h/x/1", "$share/g/z", "bad/#/x", "x/1"}
	pick := func() []string {
		var out []string
		for range rng.IntN(4) {
			out = append(out, pool[rng.IntN(len(pool))])
		}
		return out
	}
	for round := range 2000 {
		p := peers[rng.IntN(len(peers))]
		r.Apply(p, rng.IntN(5) == 0, pick(), pick())
		want := map[string]bool{}
		for _, q := range peers {
			for _, f := range r.SomeFilters(q, math.MaxInt) {
				if strings.HasPrefix(f, "$share/") {
					f = f[strings.Index(f[len("$share/"):], "/")+len("$share/")+1:]
				}
				want[f] = true
			}
		}
		got := map[string]bool{}
		r.EachWanted(func(f string) { got[f] = true })
		if !maps.Equal(got, want) {
			t.Fatalf("round %d: EachWanted %v, union %v", round, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
		}
	}
}

// TestWantedNotKept: a router told not to keep the union (the data session
// subscribes "#") walks nothing, and routes as before.
func TestWantedNotKept(t *testing.T) {
	r := NewRouter([]string{"a"}, false)
	r.Apply("a", true, []string{"x/+", "y"}, nil)
	n := 0
	r.EachWanted(func(string) { n++ })
	if n != 0 {
		t.Fatalf("EachWanted walked %d filters of a router that keeps none", n)
	}
	if got := r.Targets("x/1", false, nil); len(got) != 1 || got[0] != "a" {
		t.Fatalf("Targets(x/1) = %v, want [a]", got)
	}
}
