// Package share owns the spreading of shared subscription groups over the
// whole cluster. Stock Mosquitto hands a group's messages round robin to the
// group's members on its own broker only; to give members on other nodes
// their turn, the agent holds share members of its own in the local group
// (one per member node elsewhere), and sends each message those take to a
// member node elsewhere. This package decides which memberships the agent
// holds (Planner.Want), where a message they take goes (Planner.Decide), and
// which of those messages are the agent's own republishes coming back
// (Echoes).
package share

import (
	"slices"
	"strings"
	"sync"

	"github.com/moha-project/moha/internal/topic"
)

// Group is one shared subscription: $share/<Name>/<Filter>. Mosquitto keeps
// one member list per group name and filter.
type Group struct{ Name, Filter string }

// Subscription is the filter a member subscribes to.
func (g Group) Subscription() string { return "$share/" + g.Name + "/" + g.Filter }

// ParseGroup splits a shared subscription; ok is false for anything else.
func ParseGroup(f string) (g Group, ok bool) {
	name, filter, shared, err := topic.SplitShared(f)
	if !shared || err != nil {
		return Group{}, false
	}
	return Group{Name: name, Filter: filter}, true
}

// Planner follows this node's advertised interest and the peers', and
// decides the share memberships. It is safe for concurrent use.
type Planner struct {
	mu     sync.Mutex
	slots  int                           // share sessions: at most one membership per group each
	local  map[Group]*localGroup         // groups with a member here
	plain  func(yield func(string) bool) // this node's plain (non-shared) advertised filters
	peers  map[string]map[Group]bool     // peer -> its groups
	down   map[string]bool               // peers whose link is down
	turn   map[Group]uint64              // round robin over a group's member peers
	notify func()                        // called after a change that may move Want
}

// localGroup is a group with a member here, and how many of this node's
// plain filters overlap its filter. The planner keeps the count, not the
// plain filters: a node may advertise a million of them, which the
// interest table holds already.
type localGroup struct {
	filter        *topic.Trie // the group's filter alone, for overlap checks
	plainOverlaps int
}

// NewPlanner returns a planner for slots share sessions (0: spreading off,
// the local broker alone serves its members: shared_subscriptions
// prefer_local). plain yields this node's plain advertised filters as they
// stand when Local is called (a change included); it is read only when a
// group gets its first member here. notify, if not nil, is called after
// every change that may change Want; it must not block.
func NewPlanner(peers []string, slots int, plain func(yield func(string) bool), notify func()) *Planner {
	p := &Planner{
		slots:  slots,
		local:  map[Group]*localGroup{},
		plain:  plain,
		peers:  map[string]map[Group]bool{},
		down:   map[string]bool{},
		turn:   map[Group]uint64{},
		notify: notify,
	}
	for _, name := range peers {
		p.peers[name] = map[Group]bool{}
		p.down[name] = true // until its link comes up
	}
	return p
}

// Local applies a change of this node's advertised interest (a set): the
// plain filters move the overlap counts of the groups already here, then
// a new group counts the plain filters there are.
func (p *Planner) Local(added, removed []string) {
	p.change(func() {
		var newGroups []Group
		for _, f := range removed {
			if g, ok := ParseGroup(f); ok {
				delete(p.local, g)
			} else {
				p.countPlainLocked(f, -1)
			}
		}
		for _, f := range added {
			if g, ok := ParseGroup(f); ok {
				newGroups = append(newGroups, g)
			} else {
				p.countPlainLocked(f, 1)
			}
		}
		for _, g := range newGroups {
			if p.local[g] == nil {
				p.local[g] = p.newLocalGroup(g)
			}
		}
	})
}

// countPlainLocked adds d to the overlap count of every local group whose
// filter overlaps plain filter f.
func (p *Planner) countPlainLocked(f string, d int) {
	for _, lg := range p.local {
		if lg.filter.Overlaps(f) {
			lg.plainOverlaps += d
		}
	}
}

// newLocalGroup counts the plain filters overlapping g's.
func (p *Planner) newLocalGroup(g Group) *localGroup {
	lg := &localGroup{filter: topic.NewTrie()}
	if _, err := lg.filter.Add(g.Filter); err != nil {
		return lg // not advertised as a valid group: overlaps nothing
	}
	if p.plain != nil {
		p.plain(func(f string) bool {
			if lg.filter.Overlaps(f) {
				lg.plainOverlaps++
			}
			return true
		})
	}
	return lg
}

// Peer applies a change of peer's advertised interest; with replace, added
// is its whole set.
func (p *Planner) Peer(peer string, replace bool, added, removed []string) {
	p.change(func() {
		groups, known := p.peers[peer]
		if !known {
			return
		}
		if replace {
			clear(groups)
		}
		for _, f := range removed {
			if g, ok := ParseGroup(f); ok {
				delete(groups, g)
			}
		}
		for _, f := range added {
			if g, ok := ParseGroup(f); ok {
				groups[g] = true
			}
		}
		p.forgetTurns()
	})
}

// forgetTurns drops the turn of groups no peer has any more, so that the
// map follows the peers' interest.
func (p *Planner) forgetTurns() {
	for g := range p.turn {
		held := false
		for _, groups := range p.peers {
			held = held || groups[g]
		}
		if !held {
			delete(p.turn, g)
		}
	}
}

// SetLink records whether peer's link is up: only peers reachable now get
// a share.
func (p *Planner) SetLink(peer string, up bool) {
	p.change(func() {
		if _, known := p.peers[peer]; known {
			p.down[peer] = !up
		}
	})
}

func (p *Planner) change(apply func()) {
	p.mu.Lock()
	apply()
	p.mu.Unlock()
	if p.notify != nil {
		p.notify()
	}
}

// Want returns, per share session, the groups it should be a member of.
// A group gets one membership per member node elsewhere whose link is up
// (so the local broker's round robin gives this node its share and each
// such node one), when it has a member here and neither a plain filter nor
// another group's filter here overlaps it. The reason: the agent
// republishes into the local broker what peers send and what its own
// memberships take back, and each republish also reaches every other
// subscription here that matches; for a plain subscriber or another group
// that would be a second copy. Sorted, for stable comparisons.
func (p *Planner) Want() [][]Group {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := make([][]Group, p.slots)
	if p.slots == 0 {
		return want
	}
	groupFilters := topic.NewTrie() // counted: one reference per local group
	for g := range p.local {
		_, _ = groupFilters.Add(g.Filter)
	}
	for g, lg := range p.local {
		if lg.plainOverlaps > 0 || overlapsOthers(groupFilters, g.Filter) {
			continue
		}
		n := min(len(p.membersLocked(g)), p.slots)
		for i := range n {
			want[i] = append(want[i], g)
		}
	}
	for _, w := range want {
		slices.SortFunc(w, compareGroups)
	}
	return want
}

// overlapsOthers reports whether filters, less one reference to f, holds a
// filter overlapping f.
func overlapsOthers(filters *topic.Trie, f string) bool {
	if filters.Count(f) > 1 {
		return true
	}
	filters.Remove(f)
	defer func() { _, _ = filters.Add(f) }()
	return filters.Overlaps(f)
}

func compareGroups(a, b Group) int {
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	return strings.Compare(a.Filter, b.Filter)
}

// membersLocked returns the reachable peers with a member of g, sorted.
func (p *Planner) membersLocked(g Group) []string {
	var members []string
	for name, groups := range p.peers {
		if groups[g] && !p.down[name] {
			members = append(members, name)
		}
	}
	slices.Sort(members)
	return members
}

// Action is what to do with a message a share membership took.
type Action int

const (
	// Forward: send it to Decision.Peer, a member node elsewhere.
	Forward Action = iota + 1
	// ServedElsewhere: a member node receives the message anyway (a plain
	// subscriber there) and its broker serves the group: acknowledge it.
	ServedElsewhere
	// Keep: no member node elsewhere is reachable; publish it again here,
	// where the local broker's next turn goes to a local member.
	Keep
)

func (a Action) String() string {
	switch a {
	case Forward:
		return "forwarded"
	case ServedElsewhere:
		return "served_elsewhere"
	case Keep:
		return "kept"
	}
	return "unknown"
}

// Decision is where a taken message goes.
type Decision struct {
	Action Action
	Peer   string // for Forward
}

// Decide picks the destination of a message group g's membership took.
// receives reports whether a peer gets the message anyway (its plain
// interest matches); a member node that does serves the group there.
// Otherwise the member nodes elsewhere take turns.
func (p *Planner) Decide(g Group, receives func(peer string) bool) Decision {
	p.mu.Lock()
	defer p.mu.Unlock()
	members := p.membersLocked(g)
	if len(members) == 0 {
		return Decision{Action: Keep}
	}
	for _, m := range members {
		if receives(m) {
			return Decision{Action: ServedElsewhere, Peer: m}
		}
	}
	turn := p.turn[g]
	p.turn[g] = turn + 1
	return Decision{Action: Forward, Peer: members[turn%uint64(len(members))]}
}
