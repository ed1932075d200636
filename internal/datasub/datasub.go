// Package datasub owns the agent's data-session subscriptions when they follow
// interest: which filters the session holds, the steps that move them to the
// filters wanted, which copy of a message to keep, and which dense sets of
// exact filters it holds as one wildcard (Aggregate).
//
// Mosquitto sends a client one copy of a message per matching subscription,
// each copy carrying that subscription's identifier. Overlapping filters
// (a/+ and +/b) and the moment a subscription is added or removed would
// otherwise duplicate or lose messages. The rule that keeps exactly one copy:
//
//   - Every SUBSCRIBE gets its own identifier and a sequence number in the
//     order it is sent; the filters sharing one SUBSCRIBE never overlap, so a
//     message has at most one copy per identifier.
//   - A change is one step: either only additions or only removals, never
//     both. A step ends when the broker has applied it and every message
//     queued before has arrived (the caller's marker message came back
//     through the session). Additions may follow pending additions; a
//     removal waits for them to end, and nothing follows a removal until
//     it ends.
//   - Of the subscriptions matching a topic, the stable ones (not being added
//     or removed) are always present in a copy, whatever the broker did at
//     that moment: the copy of the earliest stable one is kept. With none,
//     the copy of the earliest subscription being added (SUBSCRIBEs take
//     effect in order, so whenever any has, the earliest has) or of the
//     earliest being removed (removals are sent latest first, so whenever any
//     is still held, the earliest is) is kept.
//
// Everything here is pure bookkeeping; the agent sends the packets.
package datasub

import (
	"cmp"
	"slices"
	"strings"
	"sync"

	"github.com/moha-project/moha/internal/topic"
)

// maxID is the largest subscription identifier.
const maxID = 268_435_455

// IsReplayID reports whether subscription identifier id was given to a
// Replay packet: replay packets get odd identifiers, the others even ones.
// A session drained by a later run (a new Set) can so still tell the
// broker's replay of a retained message from a publish.
func IsReplayID(id uint32) bool { return id%2 == 1 }

// Packet is one SUBSCRIBE to send: filters that share an identifier.
type Packet struct {
	ID      uint32
	Filters []string
	// Replay asks the broker for the filters' retained messages
	// (Retain Handling 0): set for topics known to hold one.
	Replay bool
}

// Step is one change of the subscription set: Subscribe packets or
// Unsubscribe filters, never both. Both must be sent in the order given; a
// packet's filters and the Unsubscribe list may be split over several
// packets (still in order). Seq numbers the steps; Done(Seq) ends this one
// and every earlier one.
type Step struct {
	Seq         uint64
	Subscribe   []Packet
	Unsubscribe []string
}

type state uint8

const (
	stable state = iota
	adding
	removing
)

type sub struct {
	id     uint32
	seq    uint64 // order of its SUBSCRIBE
	step   uint64 // the step that adds or removes it
	state  state
	replay bool
}

// Set is the data session's subscriptions. Keep is called on the session's
// reader; Next and Done by the goroutine that sends the packets. Safe for
// concurrent use.
type Set struct {
	mu     sync.Mutex
	subs   map[string]*sub
	trie   *topic.Trie
	ids    map[uint32]uint64 // identifier in use → its SUBSCRIBE's seq
	nextID uint32
	seq    uint64
	step   uint64 // steps issued
	adding int    // subscriptions being added
	// removingStep is the pending removal step, 0 for none. Nothing is
	// added while it is pending, and it waits for pending additions.
	removingStep uint64
}

// NewSet returns an empty set, for a session holding no subscriptions.
func NewSet() *Set {
	return &Set{subs: map[string]*sub{}, trie: topic.NewTrie(), ids: map[uint32]uint64{}}
}

// Next returns the next step toward want (filter → Replay), or nil when
// there is nothing it may do now. Additions come first: a filter that
// replaces an overlapping one is held before the old one goes. Additions
// may follow additions still pending (SUBSCRIBEs take effect in order, so
// the rule holds across them); a removal waits until every addition is
// done, and nothing follows a removal until it is done. behind reports
// wanted filters not held that must wait for a pending removal.
// Filters in want must be valid.
func (s *Set) Next(want map[string]bool) (step *Step, behind bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var add []string
	for f := range want {
		if _, held := s.subs[f]; !held {
			add = append(add, f)
		}
	}
	if s.removingStep != 0 {
		return nil, len(add) > 0
	}
	if len(add) > 0 {
		slices.Sort(add) // deterministic packets, for tests and logs
		s.step++
		return &Step{Seq: s.step, Subscribe: s.addLocked(add, want)}, false
	}
	if s.adding > 0 {
		return nil, false
	}
	var remove []string
	for f := range s.subs {
		if _, wanted := want[f]; !wanted {
			remove = append(remove, f)
		}
	}
	if len(remove) == 0 {
		return nil, false
	}
	s.step++
	for _, f := range remove {
		s.subs[f].state, s.subs[f].step = removing, s.step
	}
	// Latest first: while a removal is under way, the earliest removed
	// subscription matching a topic, whose copy is kept, is still held
	// whenever any matching one is.
	slices.SortFunc(remove, func(x, y string) int {
		if c := cmp.Compare(s.subs[y].seq, s.subs[x].seq); c != 0 {
			return c
		}
		return strings.Compare(x, y)
	})
	s.removingStep = s.step
	return &Step{Seq: s.step, Unsubscribe: remove}, false
}

// addLocked groups the filters into packets whose filters do not overlap
// each other, and records them as being added.
func (s *Set) addLocked(add []string, want map[string]bool) []Packet {
	type group struct {
		Packet
		trie *topic.Trie
	}
	var groups []*group
	for _, f := range add {
		var g *group
		for _, c := range groups {
			if c.Replay == want[f] && !c.trie.Overlaps(f) {
				g = c
				break
			}
		}
		if g == nil {
			g = &group{Packet: Packet{Replay: want[f]}, trie: topic.NewTrie()}
			groups = append(groups, g)
		}
		g.Filters = append(g.Filters, f)
		g.trie.Add(f)
	}
	// Replay packets first: among filters being added, the earliest
	// matching one's copy is kept, and a retained replay comes only
	// through the exact topic's own subscription.
	slices.SortStableFunc(groups, func(x, y *group) int {
		switch {
		case x.Replay == y.Replay:
			return 0
		case x.Replay:
			return -1
		}
		return 1
	})
	packets := make([]Packet, len(groups))
	for i, g := range groups {
		s.seq++
		g.ID = s.allocIDLocked(g.Replay)
		s.ids[g.ID] = s.seq
		for _, f := range g.Filters {
			s.subs[f] = &sub{id: g.ID, seq: s.seq, step: s.step, state: adding, replay: g.Replay}
			s.trie.Add(f)
			s.adding++
		}
		packets[i] = g.Packet
	}
	return packets
}

// allocIDLocked returns an identifier no held subscription uses, odd for
// a replay packet and even otherwise (IsReplayID).
func (s *Set) allocIDLocked(replay bool) uint32 {
	for {
		s.nextID++
		if s.nextID > maxID {
			s.nextID = 1
		}
		if _, used := s.ids[s.nextID]; !used && IsReplayID(s.nextID) == replay {
			return s.nextID
		}
	}
}

// Done records that the steps up to seq are complete: the broker applied
// them and every message queued before has arrived (the caller's marker
// for step seq came back).
func (s *Set) Done(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	removed := false
	for f, sb := range s.subs {
		switch {
		case sb.step > seq || sb.state == stable:
		case sb.state == adding:
			sb.state = stable
			s.adding--
		case sb.state == removing:
			delete(s.subs, f)
			s.trie.Remove(f)
			removed = true
		}
	}
	if s.removingStep != 0 && s.removingStep <= seq {
		s.removingStep = 0
	}
	if removed {
		s.ids = make(map[uint32]uint64, len(s.ids))
		for _, sb := range s.subs {
			s.ids[sb.id] = sb.seq
		}
	}
}

// Keep reports whether the copy of a message on topicName that came with
// subscription identifier id is the one to handle (see the package doc).
// replay reports that it came through a subscription being added with
// Replay: it may be the broker's replay of a retained message, not a
// publish. A copy the set cannot place (no identifier, or one it does not
// know) is kept: a duplicate is better than a loss.
func (s *Set) Keep(topicName string, id uint32) (keep, replay bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq, known := s.ids[id]
	if !known {
		return true, false
	}
	var best [3]*sub // earliest matching subscription per state
	s.trie.MatchFunc(topicName, func(f string, _ int) bool {
		sb := s.subs[f]
		if b := best[sb.state]; b == nil || sb.seq < b.seq {
			best[sb.state] = sb
		}
		return true
	})
	for _, b := range best {
		if b != nil {
			return b.seq == seq, b.state == adding && b.replay
		}
	}
	return true, false
}

// Filters returns the filters held or being added, sorted.
func (s *Set) Filters() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.subs))
	for f, sb := range s.subs {
		if sb.state != removing {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	return out
}

// Len returns how many filters the broker may hold for the session: held,
// being added and being removed.
func (s *Set) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}
