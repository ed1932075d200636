package interest

import (
	"fmt"
	"slices"
	"strings"

	"github.com/moha-project/moha/internal/topic"
)

// This file holds the Table's write side. Every method here runs with t.mu
// held for writing (inside Table.update).

// applyEvent applies one parsed line with Mosquitto's session semantics
// (MOSQUITTO.md, "Not logged at all" and "Takeover").
func (t *Table) applyEvent(ev Event) error {
	switch ev.Kind {
	case Connected:
		t.connected(ev)
	case Disconnected, Takeover:
		// A takeover closes the old connection like a disconnect; the
		// Connected line that follows decides, with its c flag, whether
		// the session (as kept here) continues.
		t.disconnected(ev.ClientID)
	case Expired:
		if !t.isSelf(ev.ClientID) {
			t.dropSession(ev.ClientID)
		}
	case Subscribed:
		return t.subscription(ev.Rest, true)
	case Unsubscribed:
		return t.subscription(ev.Rest, false)
	case Stopping:
		t.stopping, t.saved = true, false
	case Saved:
		if t.stopping {
			t.saved = true
			t.brokerStopped(true)
		}
	case SaveFailed:
		if t.saved {
			// What the broker restores is older than what the table holds.
			for _, s := range t.sessions {
				s.stale = true
			}
			t.setDegraded("the stopping broker could not save its database")
		}
	}
	return nil
}

// brokerStopped applies a clean stop to the table: the sessions as they
// will be once the broker starts again. With its database saved, a session
// whose last connect had clean start off is restored offline (an MQTT v5
// one uncertain: its expiry is not logged); Mosquitto 2.0.11 saves no
// session created with clean start, whatever its expiry. Without a saved
// database every session ends. The agent's own tracked sessions follow the
// same rule.
func (t *Table) brokerStopped(saved bool) {
	for id := range t.counted {
		t.counted[id] = false // counted sessions are clean: gone with the broker
	}
	for id, s := range t.sessions {
		if !saved || s.clean {
			t.dropSession(id)
			continue
		}
		s.connected, s.suspect = false, false
	}
	for id, fs := range t.tracked {
		if !saved || t.ending[id] {
			clear(fs)
			delete(t.ending, id)
		}
	}
}

// connected: a clean start begins an empty session; c0 continues what the
// table knows of it (nothing, if the broker restored a session the table
// never saw: Reconcile catches that).
func (t *Table) connected(ev Event) {
	if t.isSelf(ev.ClientID) {
		if _, ok := t.counted[ev.ClientID]; ok {
			t.counted[ev.ClientID] = true
		}
		if fs := t.tracked[ev.ClientID]; fs != nil && ev.Clean {
			clear(fs)
			t.ending[ev.ClientID] = true // a clean session ends with its connection
		}
		return
	}
	s := t.sessions[ev.ClientID]
	if s == nil {
		s = &session{id: ev.ClientID, filters: make(map[string]byte)}
		t.sessions[ev.ClientID] = s
	}
	if ev.Clean {
		t.clearFilters(s)
		s.stale = false // every filter from now on is logged
	}
	s.protocol, s.clean, s.connected, s.suspect = ev.Protocol, ev.Clean, true, false
	s.ephemeral = ev.EndsWithConnection
	t.touch(ev.ClientID)
}

// disconnected: an MQTT 3.1.1 clean session ends with its connection; any
// other stays, offline, with its filters. An MQTT v5 session stays whatever
// its clean start (its expiry is not logged), possibly longer than the
// broker keeps it: Stats counts those as uncertain, and the broker's
// counters end them (Reconcile, ReconcileClients).
func (t *Table) disconnected(id string) {
	if _, ok := t.counted[id]; ok {
		t.counted[id] = false
	}
	if t.ending[id] {
		delete(t.ending, id)
		clear(t.tracked[id])
	}
	s := t.sessions[id]
	if s == nil || t.isSelf(id) {
		return
	}
	if s.endsWithConnection() {
		t.dropSession(id)
		return
	}
	s.connected = false
	t.touch(id)
}

// subscription resolves a subscribe ("<id> <qos> <filter>") or unsubscribe
// ("<id> <filter>") line against the known ids and applies it.
func (t *Table) subscription(rest string, subscribe bool) error {
	what := "unsubscribe"
	if subscribe {
		what = "subscribe"
	}
	id, filter, qos, n := t.resolve(rest, subscribe)
	switch {
	case n == 0:
		t.unknownClients++
		t.setDegraded(fmt.Sprintf("%s line names no known client: %q", what, clip(rest)))
		return fmt.Errorf("%w: %s %q", ErrUnknownClient, what, clip(rest))
	case n > 1:
		t.ambiguous++
		t.setDegraded(fmt.Sprintf("%s line splits %d ways: %q", what, n, clip(rest)))
		return fmt.Errorf("%w: %s %q splits %d ways", ErrAmbiguousClient, what, clip(rest), n)
	case t.isSelf(id):
		if fs := t.tracked[id]; fs != nil && !isShared(filter) {
			if subscribe {
				fs[filter] = struct{}{}
			} else {
				delete(fs, filter)
			}
		}
		return nil
	}
	s := t.sessions[id]
	if subscribe {
		t.addFilter(s, filter, qos)
	} else {
		t.removeFilter(s, filter)
	}
	return nil
}

// resolve returns the id, filter and QoS of the only way to split rest at
// a known id (self ids included), and the number of ways. With withQoS the
// id is followed by " <digits> ", otherwise by " "; the filter is never
// empty.
func (t *Table) resolve(rest string, withQoS bool) (id, filter string, qos byte, n int) {
	for i := 1; i < len(rest)-1; i++ {
		if rest[i] != ' ' || !t.known(rest[:i]) {
			continue
		}
		f, q, ok := rest[i+1:], byte(0), true
		if withQoS {
			f, q, ok = cutQoS(f)
		}
		if ok {
			id, filter, qos, n = rest[:i], f, q, n+1
		}
	}
	return id, filter, qos, n
}

func (t *Table) known(id string) bool {
	if _, ok := t.sessions[id]; ok {
		return true
	}
	return t.isSelf(id)
}

func (t *Table) isSelf(id string) bool {
	_, ok := t.self[id]
	return ok
}

func (t *Table) dropSession(id string) {
	if s := t.sessions[id]; s != nil {
		t.clearFilters(s)
		delete(t.sessions, id)
		t.touch(id)
	}
}

// touch notes a session whose state changed, for the session hook.
func (t *Table) touch(id string) {
	if t.onSession != nil {
		t.touched[id] = struct{}{}
	}
}

func (t *Table) clearFilters(s *session) {
	for f := range s.filters {
		t.removeFilter(s, f)
	}
}

// addFilter adds filter to the session's set; subscribing twice to the same
// filter is one subscription, as in the broker (with the later QoS).
func (t *Table) addFilter(s *session, filter string, qos byte) {
	t.touch(s.id)
	if _, ok := s.filters[filter]; ok {
		s.filters[filter] = qos
		return
	}
	// The filter is a slice of the whole log line it came in: a copy keeps
	// only the filter alive (at a million filters, half the bytes).
	filter = strings.Clone(filter)
	s.filters[filter] = qos
	t.subscriptions++
	if !isShared(filter) {
		t.nonShared++
	}
	// A shared subscription is advertised whole ("$share/g/f"): peers route
	// to one member node per group, not to every node with a member.
	t.ref(filter, +1)
}

func (t *Table) removeFilter(s *session, filter string) {
	if _, ok := s.filters[filter]; !ok {
		return
	}
	delete(s.filters, filter)
	t.touch(s.id)
	t.subscriptions--
	if !isShared(filter) {
		t.nonShared--
	}
	t.ref(filter, -1)
}

// ref moves the reference count of an advertised filter and notes when the
// filter enters or leaves the Advertised set (only while not degraded:
// degraded, the set is {"#"} whatever the counts).
func (t *Table) ref(filter string, d int) {
	before := t.refs[filter]
	after := before + d
	if after <= 0 {
		delete(t.refs, filter)
	} else {
		t.refs[filter] = after
	}
	if t.degraded {
		return
	}
	switch {
	case before == 0 && after > 0:
		t.note(filter, +1)
	case before > 0 && after <= 0:
		t.note(filter, -1)
	}
}

// setDegraded enters (or stays in) the degraded state with a new reason.
func (t *Table) setDegraded(reason string) {
	t.setDegradedFor(reason, false)
}

// setDegradedFor is setDegraded; bySuspend tells Suspend's own call from
// every other cause, which a later Resume must not undo.
func (t *Table) setDegradedFor(reason string, bySuspend bool) {
	if t.suspended && !bySuspend {
		t.degradedWhileSuspended = true
	}
	t.reason = reason
	if t.degraded {
		return
	}
	t.degraded = true
	t.swapAdvertised(-1)
}

// clearDegraded leaves the degraded state.
func (t *Table) clearDegraded() {
	if !t.degraded {
		return
	}
	t.degraded, t.reason = false, ""
	t.swapAdvertised(+1)
}

// swapAdvertised notes the change between {"#"} and the filters in refs:
// d = -1 when entering degraded, +1 when leaving it.
func (t *Table) swapAdvertised(d int) {
	for f := range t.refs {
		if f != everything {
			t.note(f, d)
		}
	}
	if t.refs[everything] == 0 {
		t.note(everything, -d)
	}
}

func (t *Table) note(filter string, d int) {
	if v := t.delta[filter] + d; v != 0 {
		t.delta[filter] = v
	} else {
		delete(t.delta, filter)
	}
}

// takeDelta returns and resets the net change of the Advertised set.
func (t *Table) takeDelta() (added, removed []string) {
	if len(t.delta) == 0 {
		return nil, nil
	}
	for f, d := range t.delta {
		if d > 0 {
			added = append(added, f)
		} else {
			removed = append(removed, f)
		}
	}
	clear(t.delta)
	slices.Sort(added)
	slices.Sort(removed)
	return added, removed
}

// isShared reports whether filter is a shared subscription ($share/g/f),
// which the broker counts apart from the others.
func isShared(filter string) bool {
	_, _, shared, _ := topic.SplitShared(filter)
	return shared
}
