// Package datasub owns the agent's data-session subscriptions when they follow
// interest: which filters the session holds, the steps that move them to the
// filters wanted, and which copy of a message to keep.
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
//     both, and the next step waits until the broker has finished the last
//     one (the caller's marker message came back through the session: every
//     message queued before the change has then arrived).
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
// packets (still in order).
type Step struct {
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
	state  state
	replay bool
}

// Set is the data session's subscriptions. Keep is called on the session's
// reader; Next and Done by the goroutine that sends the packets. Safe for
// concurrent use.
type Set struct {
	mu      sync.Mutex
	subs    map[string]*sub
	trie    *topic.Trie
	ids     map[uint32]uint64 // identifier in use → its SUBSCRIBE's seq
	nextID  uint32
	seq     uint64
	pending bool
}

// NewSet returns an empty set, for a session holding no subscriptions.
func NewSet() *Set {
	return &Set{subs: map[string]*sub{}, trie: topic.NewTrie(), ids: map[uint32]uint64{}}
}

// Next returns the next step toward want (filter → Replay), or nil when the
// set is already there or a step is pending. Additions come first: a filter
// that replaces an overlapping one is held before the old one goes.
// Filters in want must be valid.
func (s *Set) Next(want map[string]bool) *Step {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending {
		return nil
	}
	var add []string
	for f := range want {
		if _, held := s.subs[f]; !held {
			add = append(add, f)
		}
	}
	if len(add) > 0 {
		slices.Sort(add) // deterministic packets, for tests and logs
		s.pending = true
		return &Step{Subscribe: s.addLocked(add, want)}
	}
	var remove []string
	for f, sb := range s.subs {
		if _, wanted := want[f]; !wanted {
			sb.state = removing
			remove = append(remove, f)
		}
	}
	if len(remove) == 0 {
		return nil
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
	s.pending = true
	return &Step{Unsubscribe: remove}
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
		g.ID = s.allocIDLocked()
		s.ids[g.ID] = s.seq
		for _, f := range g.Filters {
			s.subs[f] = &sub{id: g.ID, seq: s.seq, state: adding, replay: g.Replay}
			s.trie.Add(f)
		}
		packets[i] = g.Packet
	}
	return packets
}

// allocIDLocked returns an identifier no held subscription uses.
func (s *Set) allocIDLocked() uint32 {
	for {
		s.nextID++
		if s.nextID > maxID {
			s.nextID = 1
		}
		if _, used := s.ids[s.nextID]; !used {
			return s.nextID
		}
	}
}

// Done records that the pending step is complete: the broker applied it and
// every message queued before it has arrived.
func (s *Set) Done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for f, sb := range s.subs {
		switch sb.state {
		case adding:
			sb.state = stable
		case removing:
			delete(s.subs, f)
			s.trie.Remove(f)
		}
	}
	s.ids = make(map[uint32]uint64, len(s.ids))
	for _, sb := range s.subs {
		s.ids[sb.id] = sb.seq
	}
	s.pending = false
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

// CoveredStable reports whether a held wildcard filter, not being added or
// removed, matches topic name t: the session sees every write on t, and
// nothing about t can be missed while the set changes.
func (s *Set) CoveredStable(t string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	covered := false
	s.trie.MatchFunc(t, func(f string, _ int) bool {
		covered = f != t && s.subs[f].state == stable
		return !covered
	})
	return covered
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
