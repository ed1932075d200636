package datasub

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/moha-project/moha/internal/topic"
)

// broker models what Mosquitto holds for the session: filter → identifier,
// changed one packet at a time, and the copies it sends of a message: one
// per matching subscription.
type broker map[string]uint32

func (b broker) copies(topicName string) []uint32 {
	var ids []uint32
	for f, id := range b {
		if topic.Match(f, topicName) {
			ids = append(ids, id)
		}
	}
	return ids
}

// kept counts the copies of one message on topicName the set keeps.
func kept(s *Set, b broker, topicName string) int {
	n := 0
	for _, id := range b.copies(topicName) {
		if keep, _ := s.Keep(topicName, id); keep {
			n++
		}
	}
	return n
}

var (
	universeFilters = []string{"#", "a/#", "a/+", "+/b", "a/b", "a/c", "+/+", "b/+", "+/c/#", "a/b/c", "b/b"}
	universeTopics  = []string{"a", "a/b", "a/c", "b/b", "c/b", "a/b/c", "b/c/d", "x"}
)

// TestOneCopyThroughEveryChange moves the set through random wanted sets
// and checks, for a message published in every state the broker passes
// through and handled at any time before the step ends, that exactly one
// copy is kept when any subscription matched, and none otherwise.
func TestOneCopyThroughEveryChange(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s, b := NewSet(), broker{}
	for round := range 400 {
		want := map[string]bool{}
		for _, f := range universeFilters {
			if rng.IntN(3) == 0 {
				want[f] = false
			}
		}
		for step := s.Next(want); step != nil; step = s.Next(want) {
			states := []broker{clone(b)}
			for _, p := range step.Subscribe {
				for _, f := range p.Filters {
					b[f] = p.ID
				}
				states = append(states, clone(b))
			}
			for _, f := range step.Unsubscribe { // one UNSUBSCRIBE each: the worst split
				delete(b, f)
				states = append(states, clone(b))
			}
			for _, st := range states {
				checkOneCopy(t, fmt.Sprintf("round %d, pending", round), s, st)
			}
			s.Done()
			checkOneCopy(t, fmt.Sprintf("round %d, after", round), s, b)
		}
		if got, wantFilters := s.Filters(), sortedKeys(want); !slices.Equal(got, wantFilters) {
			t.Fatalf("round %d: set holds %v, want %v", round, got, wantFilters)
		}
	}
}

func checkOneCopy(t *testing.T, when string, s *Set, b broker) {
	t.Helper()
	for _, tp := range universeTopics {
		want := 0
		if len(b.copies(tp)) > 0 {
			want = 1
		}
		if got := kept(s, b, tp); got != want {
			t.Fatalf("%s: broker %v: %d copies of %q kept, want %d", when, b, got, tp, want)
		}
	}
}

func clone(b broker) broker {
	c := broker{}
	for f, id := range b {
		c[f] = id
	}
	return c
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestPacketsNeverOverlapAndStepsAreOneKind(t *testing.T) {
	s := NewSet()
	step := s.Next(map[string]bool{"a/+": false, "+/b": false, "a/b": false, "x/y": false, "r/1": true})
	if step == nil || len(step.Unsubscribe) != 0 {
		t.Fatalf("first step = %+v, want additions only", step)
	}
	seen := map[uint32]bool{}
	for _, p := range step.Subscribe {
		if seen[p.ID] {
			t.Errorf("identifier %d used twice", p.ID)
		}
		seen[p.ID] = true
		tr := topic.NewTrie()
		for _, f := range p.Filters {
			if tr.Overlaps(f) {
				t.Errorf("packet %+v: %q overlaps another filter of it", p, f)
			}
			tr.Add(f)
			if p.Replay != (f == "r/1") {
				t.Errorf("packet %+v: replay for %q wrong", p, f)
			}
		}
	}
	if s.Next(map[string]bool{}) != nil {
		t.Error("a second step while one is pending")
	}
	s.Done()
	step = s.Next(map[string]bool{"a/b": false})
	if step == nil || len(step.Subscribe) != 0 || len(step.Unsubscribe) != 4 {
		t.Fatalf("removal step = %+v", step)
	}
	s.Done()
	if s.Len() != 1 || s.Next(map[string]bool{"a/b": false}) != nil {
		t.Errorf("after removal: len %d, or a step with nothing to do", s.Len())
	}
}

func TestUnknownCopiesAreKept(t *testing.T) {
	s := NewSet()
	if keep, _ := s.Keep("a/b", 0); !keep {
		t.Error("copy without identifier dropped")
	}
	if keep, _ := s.Keep("a/b", 99); !keep {
		t.Error("copy with an unknown identifier dropped")
	}
}

func TestReplayOnlyWhileAdding(t *testing.T) {
	s := NewSet()
	step := s.Next(map[string]bool{"r/1": true})
	id := step.Subscribe[0].ID
	if keep, replay := s.Keep("r/1", id); !keep || !replay {
		t.Errorf("while adding: keep %v replay %v, want true true", keep, replay)
	}
	s.Done()
	if keep, replay := s.Keep("r/1", id); !keep || replay {
		t.Errorf("once held: keep %v replay %v, want true false", keep, replay)
	}
}

func BenchmarkKeep(b *testing.B) {
	s := NewSet()
	want := map[string]bool{"a/#": false, "+/b/#": false}
	for i := range 1000 {
		want[fmt.Sprintf("test_1/%d", i)] = false
	}
	s.Next(want)
	s.Done()
	ids := map[string]uint32{}
	for f, sb := range s.subs {
		ids[f] = sb.id
	}
	id := ids["test_1/499"]
	b.ReportAllocs()
	for b.Loop() {
		s.Keep("test_1/499", id)
	}
}
