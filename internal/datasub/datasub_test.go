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

// TestOneCopyThroughEveryChange moves the set through random wanted sets,
// sending steps while earlier ones are pending, and checks, for a message
// published in every state the broker passed through since the last marker
// came back (those may still arrive), that exactly one copy is kept when
// any subscription matched, and none otherwise.
func TestOneCopyThroughEveryChange(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s, b := NewSet(), broker{}
	states := []broker{clone(b)}
	var sent uint64
	randomWant := func() map[string]bool {
		want := map[string]bool{}
		for _, f := range universeFilters {
			if rng.IntN(3) == 0 {
				want[f] = false
			}
		}
		return want
	}
	for round := range 3000 {
		if sent > 0 && rng.IntN(3) == 0 {
			s.Done(sent) // the marker of the last step sent came back
			states = []broker{clone(b)}
		} else if step, _ := s.Next(randomWant()); step != nil {
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
			sent = step.Seq
		}
		for _, st := range states {
			checkOneCopy(t, fmt.Sprintf("round %d", round), s, st)
		}
	}
	want := randomWant()
	for {
		step, behind := s.Next(want)
		if step == nil && !behind && s.adding == 0 {
			break
		}
		if step != nil {
			for _, p := range step.Subscribe {
				for _, f := range p.Filters {
					b[f] = p.ID
				}
			}
			for _, f := range step.Unsubscribe {
				delete(b, f)
			}
			sent = step.Seq
		}
		s.Done(sent)
	}
	if got := s.Filters(); !slices.Equal(got, sortedKeys(want)) {
		t.Fatalf("set holds %v, want %v", got, sortedKeys(want))
	}
	checkOneCopy(t, "converged", s, b)
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
	step, _ := s.Next(map[string]bool{"a/+": false, "+/b": false, "a/b": false, "x/y": false, "r/1": true})
	if step == nil || len(step.Unsubscribe) != 0 {
		t.Fatalf("first step = %+v, want additions only", step)
	}
	seen := map[uint32]bool{}
	for _, p := range step.Subscribe {
		if seen[p.ID] {
			t.Errorf("identifier %d used twice", p.ID)
		}
		seen[p.ID] = true
		if IsReplayID(p.ID) != p.Replay {
			t.Errorf("packet %+v: identifier parity does not say replay=%v", p, p.Replay)
		}
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
	if next, _ := s.Next(map[string]bool{}); next != nil {
		t.Error("a removal while additions are pending")
	}
	more, _ := s.Next(map[string]bool{"a/+": false, "+/b": false, "a/b": false, "x/y": false, "r/1": true, "z": false})
	if more == nil || len(more.Subscribe) != 1 || more.Seq != step.Seq+1 {
		t.Fatalf("an addition after a pending one = %+v", more)
	}
	s.Done(step.Seq)
	if next, _ := s.Next(map[string]bool{"a/b": false}); next != nil {
		t.Error("a removal while the second addition is pending")
	}
	s.Done(more.Seq)
	step, _ = s.Next(map[string]bool{"a/b": false})
	if step == nil || len(step.Subscribe) != 0 || len(step.Unsubscribe) != 5 {
		t.Fatalf("removal step = %+v", step)
	}
	if next, behind := s.Next(map[string]bool{"a/b": false, "new": false}); next != nil || !behind {
		t.Errorf("an addition while a removal is pending: step %+v, behind %v", next, behind)
	}
	s.Done(step.Seq)
	if next, _ := s.Next(map[string]bool{"a/b": false}); s.Len() != 1 || next != nil {
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
	step, _ := s.Next(map[string]bool{"r/1": true})
	id := step.Subscribe[0].ID
	if keep, replay := s.Keep("r/1", id); !keep || !replay {
		t.Errorf("while adding: keep %v replay %v, want true true", keep, replay)
	}
	s.Done(step.Seq)
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
	step, _ := s.Next(want)
	s.Done(step.Seq)
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
