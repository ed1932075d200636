// Package replica decides where persistent sessions are replicated and
// which replicas a node keeps (docs/SESSIONS.md): the holder's side
// (Announcer: which nodes must hold a replica of each session held here,
// and what to tell them when a session or a link changes) and the replica
// node's side (Keeper: the replicas it keeps, for which holder, and when
// one ends). Pure bookkeeping: the agent runs the broker sessions.
package replica

import (
	"maps"
	"slices"

	"github.com/moha-project/moha/internal/mesh"
	"github.com/moha-project/moha/internal/placement"
)

// Targets returns the nodes that must hold replicas of a session held on
// self: the first n nodes of the client id's bucket order, self skipped,
// that live reports up — where the load balancer sends the client if self
// dies, then if that one dies too.
func Targets(id, self string, nodes []string, live func(string) bool, n int) []string {
	if n <= 0 {
		return nil
	}
	up := func(node string) bool { return node != self && live(node) }
	return placement.Serving(id, nodes, up, n)
}

// Send is one SESSIONS change for one peer.
type Send struct {
	Peer   string
	Change mesh.SessionChange
}

// Announcer is the holder's bookkeeping: the persistent sessions held
// here, and which peers were told to keep a replica of each. Not safe for
// concurrent use (one owner).
type Announcer struct {
	self     string
	nodes    []string
	replicas int
	live     map[string]bool
	held     map[string]mesh.SessionNote // id -> the session as last told
	told     map[string][]string         // id -> peers told to keep a replica
}

// NewAnnouncer returns the bookkeeping of node self in a cluster of nodes,
// keeping replicas replicas of each session; every peer starts down.
func NewAnnouncer(self string, nodes []string, replicas int) *Announcer {
	return &Announcer{self: self, nodes: slices.Clone(nodes), replicas: replicas, live: map[string]bool{},
		held: map[string]mesh.SessionNote{}, told: map[string][]string{}}
}

// Update records a change of session note.ID: held says this node holds it
// (a persistent session, not a replica kept for another node). It returns
// what to send: the session to every node that must keep a replica, and a
// drop to every node told before that no longer must.
//
// With no replicas wanted (session_replicas 0) nothing is recorded: the
// notes would be a copy of every persistent session's filters that no
// peer is ever sent.
func (a *Announcer) Update(note mesh.SessionNote, held bool) []Send {
	if a.replicas <= 0 {
		return nil
	}
	if !held {
		if _, ok := a.held[note.ID]; !ok {
			return nil
		}
		delete(a.held, note.ID)
	} else {
		a.held[note.ID] = note
	}
	out := map[string][]mesh.SessionNote{}
	a.retarget(note.ID, true, out)
	return sends(out, "")
}

// SetLive records whether peer's link is up. It returns what to send:
// sessions whose replica moves because of it go to their new nodes (and
// drops to the old), and a peer that came up gets a Replace with every
// session it must keep a replica of (possibly none).
func (a *Announcer) SetLive(peer string, up bool) []Send {
	if a.live[peer] == up {
		return nil
	}
	a.live[peer] = up
	out := map[string][]mesh.SessionNote{}
	for _, id := range slices.Sorted(maps.Keys(a.held)) {
		a.retarget(id, false, out)
	}
	result := sends(out, peer)
	if up {
		result = append(result, Send{Peer: peer, Change: mesh.SessionChange{Replace: true, Notes: a.Snapshot(peer)}})
	}
	return result
}

// Snapshot returns every session peer must keep a replica of, for a
// Replace.
func (a *Announcer) Snapshot(peer string) []mesh.SessionNote {
	var out []mesh.SessionNote
	for _, id := range slices.Sorted(maps.Keys(a.held)) {
		if slices.Contains(a.told[id], peer) {
			out = append(out, a.held[id])
		}
	}
	return out
}

// Replicas returns the peers told to keep a replica of id, for /status.
func (a *Announcer) Replicas(id string) []string { return slices.Clone(a.told[id]) }

// Holds reports whether id is a session held here (announced).
func (a *Announcer) Holds(id string) bool {
	_, ok := a.held[id]
	return ok
}

// Held returns how many sessions are held here and announced.
func (a *Announcer) Held() int { return len(a.held) }

// retarget moves id's replicas to where they belong now, adding to out
// what each peer must be sent. changed: the session itself changed, so
// every target is sent it again; otherwise only new targets are.
func (a *Announcer) retarget(id string, changed bool, out map[string][]mesh.SessionNote) {
	note, held := a.held[id]
	var want []string
	if held {
		want = Targets(id, a.self, a.nodes, func(n string) bool { return a.live[n] }, a.replicas)
	}
	before := a.told[id]
	for _, p := range before {
		if !slices.Contains(want, p) && a.live[p] {
			out[p] = append(out[p], mesh.SessionNote{ID: id, Drop: true})
		}
	}
	for _, p := range want {
		if changed || !slices.Contains(before, p) {
			out[p] = append(out[p], note)
		}
	}
	if len(want) == 0 {
		delete(a.told, id)
	} else {
		a.told[id] = want
	}
}

// sends turns out into one change per peer, in name order, except for
// skip (a peer about to get a Replace instead).
func sends(out map[string][]mesh.SessionNote, skip string) []Send {
	var s []Send
	for _, p := range slices.Sorted(maps.Keys(out)) {
		if p != skip {
			s = append(s, Send{Peer: p, Change: mesh.SessionChange{Notes: out[p]}})
		}
	}
	return s
}
