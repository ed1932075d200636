package interest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Errors Apply returns, besides ErrMalformed, for subscribe and unsubscribe
// lines it cannot attribute to exactly one session. Both degrade the table.
var (
	ErrUnknownClient   = errors.New("interest: subscription line for an unknown client")
	ErrAmbiguousClient = errors.New("interest: subscription line matches several clients")
)

// StartupReason is the degraded reason of a new Table: clients may have
// subscribed before the agent's log session existed.
const StartupReason = "startup: not yet reconciled with the broker"

// everything is what a degraded node advertises: forward it all.
const everything = "#"

// session is what the table knows of one broker session.
type session struct {
	id       string
	filters  map[string]byte // as subscribed (shared ones as "$share/g/f") -> QoS
	protocol int             // MQTT protocol level of the last connect
	clean    bool            // clean start on the last connect
	// ephemeral: the caller knows the session ends with its connection
	// (Event.EndsWithConnection).
	ephemeral bool
	connected bool
	// suspect: a clean session that was connected when the agent lost its
	// broker session. If the broker restarted, it is gone (clean sessions
	// do not survive a restart, and their end is never logged).
	suspect bool
	// stale: log lines about this session may have been missed, so its
	// filters may differ from what the broker holds, in a way no count can
	// show (one filter swapped for another). A clean start re-learns them.
	stale bool
}

// endsWithConnection reports a session the broker discards when its
// connection closes: an MQTT 3.1/3.1.1 clean session. An MQTT v5 session
// lives on for its Session Expiry Interval whatever its clean start, and
// the log shows neither the interval nor a DISCONNECT's change of it.
func (s *session) endsWithConnection() bool {
	return s.ephemeral || (s.clean && s.protocol < 5)
}

// uncertain reports a session that may be gone unseen: an offline MQTT v5
// session (its expiry is not logged), or a suspect one.
func (s *session) uncertain() bool {
	return s.suspect || (!s.connected && s.protocol == 5)
}

// Table is the node's interest table, built from the broker's log lines.
// It is safe for concurrent use: the log reader writes, HTTP handlers read.
//
// onChange is called after each write that changes the Advertised set, with
// the sorted filters that entered and left it. It runs outside the state
// lock, once the change is visible to readers, and writers are serialized
// around it, so calls are never concurrent and arrive in order. It may call
// the read methods (Advertised, Degraded, Stats, Clients) but must not call
// a writing method (Apply, MarkDegraded, SetOwnSubscriptions, Reconcile):
// that would deadlock.
type Table struct {
	writeMu      sync.Mutex    // serializes writers and onChange
	appliedCount atomic.Uint64 // log lines seen, for Applied
	mu           sync.RWMutex
	self         map[string]struct{}
	onChange     func(added, removed []string)
	// onSession, if set, is called after a write with the ids of the
	// sessions it changed (SetSessionHook); touched collects them.
	onSession func(ids []string)
	touched   map[string]struct{}

	sessions map[string]*session
	// refs counts, per advertised filter, the session filters that map to
	// it (a shared "$share/g/f" is its own entry): the multiset of the node's interest.
	refs          map[string]int
	subscriptions int // sum over sessions of their filters
	nonShared     int // the part of subscriptions the broker's counter sees
	own           int // non-shared subscriptions of the agent's own sessions (SetOwnSubscriptions)
	// tracked holds, per own session whose log lines the table follows
	// (TrackOwn), the filters those lines gave it; they count as own.
	tracked    map[string]map[string]struct{}
	ending     map[string]bool // tracked clean sessions: their disconnect ends them
	ownClients int             // the agent's own sessions, all connected
	// counted holds the own sessions that come and go (CountOwnConnection):
	// true while their connect line was seen and neither their disconnect
	// line nor OwnConnectionGone since.
	counted map[string]bool

	degraded bool
	reason   string
	// suspended: the agent's log session is down and may resume (the
	// broker queues the lines for it); Resume restores the state Suspend
	// saved unless something else degraded the table meanwhile.
	suspended              bool
	savedDegraded          bool
	savedReason            string
	degradedWhileSuspended bool
	// stopping: the broker logged its clean stop; saved: it then wrote
	// its database (BrokerStopped ran at that line).
	stopping, saved bool

	// delta collects the net change of the Advertised set during one write.
	delta map[string]int

	parseErrors, unknownClients, ambiguous uint64
	reconciled                             bool
	brokerCount, expected                  int
	clientsTotal                           int
	forgotten                              uint64
}

// NewTable returns a table that starts degraded (StartupReason). self holds
// the client ids of the agent's own sessions, whose lines are ignored.
// onChange may be nil; see Table for when it is called. The initial
// Advertised set ({"#"}) is not reported through onChange.
func NewTable(self []string, onChange func(added, removed []string)) *Table {
	t := &Table{
		self:     make(map[string]struct{}, len(self)),
		onChange: onChange,
		sessions: make(map[string]*session),
		refs:     make(map[string]int),
		delta:    make(map[string]int),
		tracked:  make(map[string]map[string]struct{}),
		ending:   make(map[string]bool),
		counted:  make(map[string]bool),
		touched:  make(map[string]struct{}),
		degraded: true,
		reason:   StartupReason,
	}
	for _, id := range self {
		t.self[id] = struct{}{}
	}
	return t
}

// Apply parses and applies one log message. Errors are for the caller to log
// and count; they never stop the table. An unparseable subscribe or
// unsubscribe line, or one that cannot be attributed to exactly one known
// session, degrades the table (interest unknown): a subscription the table
// cannot place must not turn into no interest.
func (t *Table) Apply(topic string, payload []byte) error {
	ev, err := ParseLine(topic, payload)
	return t.ApplyParsed(topic, ev, err)
}

// ApplyParsed is Apply for a line the caller already parsed with ParseLine
// (ev and err are what it returned), so that a line is parsed once.
func (t *Table) ApplyParsed(topic string, ev Event, err error) error {
	t.appliedCount.Add(1)
	if err == nil && ev.Kind == Ignored {
		return nil
	}
	return t.update(func() error {
		if err != nil {
			t.parseErrors++
			if topic == TopicSubscribe || topic == TopicUnsubscribe {
				t.setDegraded("unparseable " + topicWhat(topic) + " line")
			}
			return err
		}
		return t.applyEvent(ev)
	})
}

// Advertised returns the sorted filters this node must advertise to its
// peers: {"#"} while degraded, else the distinct filters of all known
// sessions (a shared subscription advertised whole, "$share/g/f").
func (t *Table) Advertised() []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.degraded {
		return []string{everything}
	}
	out := make([]string, 0, len(t.refs))
	for f := range t.refs {
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

// EachPlainAdvertised calls yield for every advertised filter that is not a
// shared subscription ("#" alone while degraded), until yield returns false.
// It holds the table's read lock: yield must not call back into the table.
func (t *Table) EachPlainAdvertised(yield func(string) bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.degraded {
		yield(everything)
		return
	}
	for f := range t.refs {
		if !isShared(f) && !yield(f) {
			return
		}
	}
}

// SomeAdvertised returns up to max of the advertised filters, sorted among
// themselves: a sample for a status page, which must not hold the table's
// lock to list and sort a million.
func (t *Table) SomeAdvertised(max int) []string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.degraded {
		return []string{everything}
	}
	out := make([]string, 0, min(max, len(t.refs)))
	for f := range t.refs {
		if len(out) == max {
			break
		}
		out = append(out, f)
	}
	slices.Sort(out)
	return out
}

// Degraded reports whether the table advertises "#" because its picture may
// be incomplete, and why.
func (t *Table) Degraded() (bool, string) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.degraded, t.reason
}

// MarkDegraded forces the degraded state (e.g. the agent lost its log
// session and missed lines). It lasts until Reconcile clears it.
func (t *Table) MarkDegraded(reason string) {
	_ = t.update(func() error {
		t.setDegraded(reason)
		return nil
	})
}

// SessionLost records that the agent lost its broker session and lines were
// missed: every known session is stale (its filters may have changed
// unseen) until a clean start re-learns them or it ends, and if the broker
// restarted every clean session is gone unlogged: those are suspect. The
// table is degraded and no count clears that while a stale session remains.
func (t *Table) SessionLost(reason string) {
	_ = t.update(func() error {
		if t.stopping && !t.saved {
			t.brokerStopped(false) // stopped without a database: every session ended
		}
		t.stopping, t.saved = false, false
		for _, s := range t.sessions {
			s.stale = true
			if s.clean {
				s.suspect = true
			}
		}
		t.suspended = false
		t.setDegraded(reason)
		return nil
	})
}

// Suspend records that the agent's log session is down but may resume
// without a missed line (a persistent session: the broker queues the lines
// for it). Until Resume or SessionLost the table advertises "#".
func (t *Table) Suspend(reason string) {
	_ = t.update(func() error {
		if !t.suspended {
			t.suspended = true
			t.savedDegraded, t.savedReason = t.degraded, t.reason
			t.degradedWhileSuspended = false
		}
		t.setDegradedFor(reason, true)
		return nil
	})
}

// Resume ends a suspension once the log session resumed and every line
// queued meanwhile was applied: the state before Suspend returns, unless
// something else degraded the table in between.
func (t *Table) Resume() {
	_ = t.update(func() error {
		if !t.suspended {
			return nil
		}
		t.suspended = false
		t.stopping, t.saved = false, false
		switch {
		case t.degradedWhileSuspended:
		case t.savedDegraded:
			t.reason = t.savedReason
		default:
			t.clearDegraded()
		}
		return nil
	})
}

// StoppedCleanly reports whether the broker logged a clean stop and the
// saving of its database since the last Resume or SessionLost: the table
// then holds what the restarted broker restored.
func (t *Table) StoppedCleanly() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.stopping && t.saved
}

// TrackOwn makes the table count the subscriptions of the agent's own
// session id (one of self) from its log lines, as they come in order with
// the broker's counters: for a session whose subscriptions change while it
// runs. A clean start empties them, and a clean session's disconnect ends
// them.
func (t *Table) TrackOwn(id string) {
	_ = t.update(func() error {
		if t.tracked[id] == nil {
			t.tracked[id] = map[string]struct{}{}
		}
		return nil
	})
}

// ForgetOwn empties the tracked subscriptions of an own session that
// started afresh without its connect line reaching the table (the log
// session itself connects before it subscribes to the log).
func (t *Table) ForgetOwn(id string) {
	_ = t.update(func() error {
		clear(t.tracked[id])
		return nil
	})
}

// ownCount returns the agent's own subscriptions the broker counts.
func (t *Table) ownCount() int {
	n := t.own
	for _, fs := range t.tracked {
		n += len(fs)
	}
	return n
}

// SetOwnSubscriptions records how many non-shared subscriptions the agent's
// own sessions hold; the broker's counter includes them.
func (t *Table) SetOwnSubscriptions(n int) {
	_ = t.update(func() error {
		t.own = n
		return nil
	})
}

// Reconcile compares the broker's $SYS/broker/subscriptions/count with what
// the table explains: the agent's own subscriptions plus every session's
// distinct non-shared filters, connected or offline. More on the broker
// means the table under-states: degraded. Equal clears the degraded state
// only when nothing in the table may over-state (an uncertain session that
// may be gone) or be wrong unseen (a stale one): otherwise an unknown
// subscription could hide behind a gone one, or a swapped filter behind an
// equal count. Fewer means the table over-states (typically MQTT v5
// sessions that expired unseen), which costs bandwidth but loses nothing:
// noted in Stats, and the degraded state is left as it is.
func (t *Table) Reconcile(brokerCount int) {
	_ = t.update(func() error {
		t.forgotten += uint64(t.forgetExpired(brokerCount))
		expected := t.ownCount() + t.nonShared
		t.reconciled, t.brokerCount, t.expected = true, brokerCount, expected
		switch {
		case brokerCount > expected:
			t.setDegraded(fmt.Sprintf("broker counts %d subscriptions, the table explains %d", brokerCount, expected))
		case brokerCount == expected && !t.suspended && t.exact():
			t.clearDegraded()
		}
		return nil
	})
}

// exact reports whether every known session's filters are sure: none is
// stale, and none that may be gone (uncertain) holds a subscription the
// broker counts.
func (t *Table) exact() bool {
	for _, s := range t.sessions {
		if s.stale || (s.uncertain() && s.countedFilters() > 0) {
			return false
		}
	}
	return true
}

// countedFilters returns how many of the session's filters the broker's
// subscription count includes (shared ones are counted apart).
func (s *session) countedFilters() int {
	n := 0
	for f := range s.filters {
		if !isShared(f) {
			n++
		}
	}
	return n
}

// Applied returns how many log lines the table has been given. A counter
// received after the last line was applied reflects every line so far.
func (t *Table) Applied() uint64 { return t.appliedCount.Load() }

// SetOwnClients records how many sessions the agent itself holds on the
// broker (all connected while the agent runs).
func (t *Table) SetOwnClients(n int) {
	_ = t.update(func() error {
		t.ownClients = n
		return nil
	})
}

// CountOwnConnection makes the table count the own session id (one of
// self) among the broker's clients while its connect line was the last
// seen: for a session the agent opens and closes while it runs. The count
// may fall short of the broker's, never exceed it (see OwnConnectionGone):
// a short count makes ReconcileClients forget nothing.
func (t *Table) CountOwnConnection(id string) {
	_ = t.update(func() error {
		if _, ok := t.counted[id]; !ok {
			t.counted[id] = false
		}
		return nil
	})
}

// OwnConnectionGone stops counting a counted own session at once, without
// waiting for its disconnect line: the agent closed it or lost it.
func (t *Table) OwnConnectionGone(id string) {
	_ = t.update(func() error {
		if _, ok := t.counted[id]; ok {
			t.counted[id] = false
		}
		return nil
	})
}

func (t *Table) ownOnline() int {
	n := 0
	for _, on := range t.counted {
		if on {
			n++
		}
	}
	return n
}

// ReconcileClients uses the broker's $SYS/broker/clients/total (connected
// clients plus offline persistent sessions, the agent's own included) to
// forget uncertain sessions: offline MQTT v5 sessions whose expiry the log
// does not show. When the offline sessions the broker still holds are
// exactly the ones the table is sure of, every uncertain session has
// expired: its filters are dropped, so interest does not grow without bound.
// It returns how many sessions it forgot.
func (t *Table) ReconcileClients(total int) (forgotten int) {
	_ = t.update(func() error {
		connected, certainOffline := 0, 0
		var uncertain []string
		for id, s := range t.sessions {
			if s.stale || s.suspect {
				return nil // whether it is still there is unknown: the total proves nothing
			}
			switch {
			case s.connected:
				connected++
			case s.uncertain():
				uncertain = append(uncertain, id)
			default:
				certainOffline++
			}
		}
		t.clientsTotal = total
		if len(uncertain) == 0 || total-t.ownClients-t.ownOnline()-connected != certainOffline {
			return nil
		}
		for _, id := range uncertain {
			t.dropSession(id)
		}
		forgotten = len(uncertain)
		t.forgotten += uint64(forgotten)
		return nil
	})
	return forgotten
}

// forgetExpired drops the uncertain sessions (offline MQTT v5, expiry not
// logged) when the broker's subscription count is exactly what the certain
// sessions explain: the uncertain ones' subscriptions are then gone, so
// their sessions ended. That needs the certain sessions to be exact: not
// while one is stale. Sessions holding shared subscriptions (counted apart
// by the broker) are kept: over-stating is safe. Called with t.mu held.
func (t *Table) forgetExpired(brokerCount int) int {
	certain, uncertainFilters := t.ownCount(), 0
	var drop []string
	for id, s := range t.sessions {
		if s.stale {
			return 0
		}
		n := s.countedFilters()
		shared := n < len(s.filters)
		switch {
		case !s.uncertain():
			certain += n
		case shared:
			certain += n // kept: the count cannot tell about it
		default:
			uncertainFilters += n
			drop = append(drop, id)
		}
	}
	if uncertainFilters == 0 || brokerCount != certain {
		return 0
	}
	for _, id := range drop {
		t.dropSession(id)
	}
	return len(drop)
}

// Stats is a snapshot of the table's size and health.
type Stats struct {
	Clients          int    `json:"clients"`           // sessions known: connected plus offline persistent
	Connected        int    `json:"connected"`         // sessions with a live connection
	Uncertain        int    `json:"uncertain"`         // offline MQTT v5 persistent sessions: their expiry is not logged
	Filters          int    `json:"filters"`           // distinct advertised filters ("$share/g/f" is one)
	Subscriptions    int    `json:"subscriptions"`     // sum over sessions of their distinct filters
	OwnSubscriptions int    `json:"own_subscriptions"` // as set by SetOwnSubscriptions
	ParseErrors      uint64 `json:"parse_errors"`      // lines that did not parse
	UnknownClients   uint64 `json:"unknown_clients"`   // subscription lines naming no known client
	AmbiguousClients uint64 `json:"ambiguous_clients"` // subscription lines that split several ways
	Degraded         bool   `json:"degraded"`
	DegradedReason   string `json:"degraded_reason"`
	Reconciled       bool   `json:"reconciled"`    // Reconcile was called at least once
	BrokerCount      int    `json:"broker_count"`  // last $SYS/broker/subscriptions/count seen
	Expected         int    `json:"expected"`      // what the table explained at that Reconcile
	OverStated       bool   `json:"over_stated"`   // BrokerCount < Expected at the last Reconcile
	ClientsTotal     int    `json:"clients_total"` // last $SYS/broker/clients/total seen
	Forgotten        uint64 `json:"forgotten"`     // uncertain sessions dropped once the broker's counts proved them gone
	Stale            int    `json:"stale"`         // sessions whose filters may have changed while log lines were missed
	Suspended        bool   `json:"suspended"`     // the log session is down and may resume without a missed line
}

// Stats returns a snapshot of the table's counters.
func (t *Table) Stats() Stats {
	t.mu.RLock()
	defer t.mu.RUnlock()
	st := Stats{
		Clients:          len(t.sessions),
		Filters:          len(t.refs),
		Subscriptions:    t.subscriptions,
		OwnSubscriptions: t.ownCount(),
		ParseErrors:      t.parseErrors,
		UnknownClients:   t.unknownClients,
		AmbiguousClients: t.ambiguous,
		Degraded:         t.degraded,
		DegradedReason:   t.reason,
		Reconciled:       t.reconciled,
		BrokerCount:      t.brokerCount,
		Expected:         t.expected,
		OverStated:       t.reconciled && t.brokerCount < t.expected,
		ClientsTotal:     t.clientsTotal,
		Forgotten:        t.forgotten,
	}
	for _, s := range t.sessions {
		if s.connected {
			st.Connected++
		}
		if s.uncertain() {
			st.Uncertain++
		}
		if s.stale {
			st.Stale++
		}
	}
	st.Suspended = t.suspended
	return st
}

// Offline reports whether the broker holds id's session with no client
// connected to it, as far as the log showed.
func (t *Table) Offline(id string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s, ok := t.sessions[id]
	return ok && !s.connected
}

// Clients returns every known session's filters, sorted, as subscribed
// (shared subscriptions in full, "$share/g/f"), for /status and debugging.
// It copies the whole table: meant for small tables.
func (t *Table) Clients() map[string][]string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make(map[string][]string, len(t.sessions))
	for id, s := range t.sessions {
		filters := make([]string, 0, len(s.filters))
		for f := range s.filters {
			filters = append(filters, f)
		}
		slices.Sort(filters)
		out[id] = filters
	}
	return out
}

// update runs one write under the locks and reports the resulting change of
// the Advertised set outside the state lock (see Table).
func (t *Table) update(write func() error) error {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	t.mu.Lock()
	err := write()
	added, removed := t.takeDelta()
	touched := t.takeTouched()
	t.mu.Unlock()
	if t.onChange != nil && (len(added) > 0 || len(removed) > 0) {
		t.onChange(added, removed)
	}
	if len(touched) > 0 {
		t.onSession(touched)
	}
	return err
}

func (t *Table) takeTouched() []string {
	if len(t.touched) == 0 {
		return nil
	}
	ids := make([]string, 0, len(t.touched))
	for id := range t.touched {
		ids = append(ids, id)
	}
	clear(t.touched)
	slices.Sort(ids)
	return ids
}

func topicWhat(topic string) string {
	return strings.TrimPrefix(topic, "$SYS/broker/log/M/")
}

// SessionInfo is what the table knows of one client's session.
type SessionInfo struct {
	ID        string
	Protocol  int  // MQTT protocol level of the last connect (4: 3.1.1, 5: v5)
	Clean     bool // clean start on the last connect
	Connected bool
	Filters   []Filter // sorted by filter
}

// Filter is one subscription of a session.
type Filter struct {
	Filter string
	QoS    byte
}

// Persistent reports a session that outlives its connection for certain:
// connected with clean start off (MQTT 3.1.1 clean session 0, or MQTT v5
// clean start 0 — whose expiry the log does not show).
func (s SessionInfo) Persistent() bool { return !s.Clean }

// SetSessionHook makes the table call f after each write with the sorted
// ids of the sessions it changed (connected, disconnected, subscribed,
// unsubscribed, ended); Session then tells their state. f runs outside the
// state lock, after onChange, under the same rules as onChange. Set it
// before the first write.
func (t *Table) SetSessionHook(f func(ids []string)) {
	t.writeMu.Lock()
	defer t.writeMu.Unlock()
	t.onSession = f
}

// Session returns what the table knows of id's session; false when it
// knows none (or id is one of the agent's own).
func (t *Table) Session(id string) (SessionInfo, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s, ok := t.sessions[id]
	if !ok {
		return SessionInfo{}, false
	}
	return s.info(), true
}

// Known reports whether the table knows a session of id.
func (t *Table) Known(id string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	_, ok := t.sessions[id]
	return ok
}

// Persistent reports whether the table knows a session of id that
// SessionInfo.Persistent reports (without copying its filters).
func (t *Table) Persistent(id string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	s, ok := t.sessions[id]
	return ok && !s.clean
}

// PersistentSessions returns every session Persistent reports, sorted by id.
func (t *Table) PersistentSessions() []SessionInfo {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []SessionInfo
	for _, s := range t.sessions {
		if !s.clean {
			out = append(out, s.info())
		}
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func (s *session) info() SessionInfo {
	in := SessionInfo{ID: s.id, Protocol: s.protocol, Clean: s.clean, Connected: s.connected,
		Filters: make([]Filter, 0, len(s.filters))}
	for f, q := range s.filters {
		in.Filters = append(in.Filters, Filter{Filter: f, QoS: q})
	}
	slices.SortFunc(in.Filters, func(a, b Filter) int { return strings.Compare(a.Filter, b.Filter) })
	return in
}
