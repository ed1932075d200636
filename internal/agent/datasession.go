package agent

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/moha-project/moha/internal/datasub"
	"github.com/moha-project/moha/internal/forward"
	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/retained"
	"github.com/moha-project/moha/internal/session"
	"github.com/moha-project/moha/internal/status"
	"github.com/moha-project/moha/internal/topic"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// With data_subscription all (the default) the data session subscribes
// "#": the agent sees every message and keeps those no peer wanted for the
// replay history that closes the subscribe window. With interest it
// subscribes to what peers need: a message no peer wants is never sent to
// the agent, which saves the broker and the agent the work of handing it
// over only to drop it (docs/ARCHITECTURE.md, "The subscribe window").
// With interest its filters include every topic holding a retained message
// (retained writes reach every node), and a retained message on a new topic
// is found by a rescan when the broker's retained count changes.
//
// The session is persistent, so that what clients publish while the agent
// is away waits in the broker. A new run cannot know which filters an
// earlier run left subscribed, so it uses the other of two client ids for
// its live session, and drains the one left behind: it takes every message
// that session queued, then ends it (see drain).

const (
	// subscribeChunk bounds the filters of one SUBSCRIBE or UNSUBSCRIBE.
	subscribeChunk = 1000
	// drainAckTimeout bounds the wait for the peers to take what a drained
	// session delivered before it is ended.
	drainAckTimeout = 30 * time.Second
)

type dataMode int32

const (
	// modeDrain keeps every copy: a session left by an earlier run, whose
	// filters are unknown (overlapping ones duplicate: at least once).
	modeDrain dataMode = iota
	// modeLive keeps one copy of each message (datasub.Set).
	modeLive
	// modeDrop acknowledges and drops: a drained session whose messages
	// the live session receives too.
	modeDrop
)

// dataConn is one data session and how its deliveries are handled.
type dataConn struct {
	id        string
	sess      *session.Session
	mode      atomic.Int32
	set       *datasub.Set
	markTopic string
	// markToken is this run's proof on its markers: a client can publish
	// to the marker topic too, and an earlier run's markers may still be
	// queued in a session left behind.
	markToken [16]byte
	lastMark  atomic.Uint64
	marked    chan struct{} // a marker arrived (capacity 1)
	// partnered: a live session receives whatever this drained one still
	// gets after its marker, so that is dropped (modeDrain → modeDrop).
	partnered atomic.Bool
	taken     atomic.Int64  // messages a drained session took, not yet acknowledged
	acked     chan struct{} // taken fell to zero (capacity 1)
}

func (a *Agent) dataClientIDs() [2]string { return a.ids.data }

// dialData connects both data session ids (persistent).
func (a *Agent) dialData(ctx context.Context) ([]*dataConn, error) {
	var conns []*dataConn
	for i, id := range a.dataClientIDs() {
		c := &dataConn{
			id:        id,
			set:       datasub.NewSet(),
			markTopic: fmt.Sprintf("$moha/%s/mark/%d", a.node.Name, i),
			marked:    make(chan struct{}, 1),
			acked:     make(chan struct{}, 1),
		}
		if _, err := rand.Read(c.markToken[:]); err != nil {
			closeData(conns)
			return nil, fmt.Errorf("data session %s: marker token: %w", id, err)
		}
		cfg := a.sessionConfig(id)
		cfg.SessionExpiry = dataSessionExpiry
		cfg.ReceiveMaximum = 65535
		s, err := session.Dial(ctx, cfg, func(d *session.Delivery) { a.onData(c, d) })
		if err != nil {
			closeData(conns)
			return nil, fmt.Errorf("data session %s: %w", id, err)
		}
		c.sess = s
		conns = append(conns, c)
	}
	return conns, nil
}

func closeData(conns []*dataConn) {
	for _, c := range conns {
		c.sess.Close()
	}
}

// onData handles one delivery on a data session, on its reader goroutine.
func (a *Agent) onData(c *dataConn, d *session.Delivery) {
	m := &d.Message
	if m.Topic == c.markTopic {
		d.Ack()
		if !c.ownMarker(m.Payload) {
			a.security.event("unproven_marker", "ignored a marker without this run's token on a data session's marker topic (a client published it, or an earlier run left it)", "topic", m.Topic)
			return
		}
		if c.partnered.Load() {
			// Switched here, on the reader: nothing after the marker is
			// taken.
			c.mode.CompareAndSwap(int32(modeDrain), int32(modeDrop))
		}
		c.lastMark.Store(binary.BigEndian.Uint64(m.Payload[:8]))
		select {
		case c.marked <- struct{}{}:
		default:
		}
		return
	}
	done := func() {}
	switch dataMode(c.mode.Load()) {
	case modeDrop:
		d.Ack()
		return
	case modeLive:
		keep, replay := c.set.Keep(m.Topic, d.SubID)
		if !keep {
			a.metrics.dataCopies.Inc()
			d.Ack()
			return
		}
		if replay && m.Retain {
			// The broker's replay of a retained message on subscribe: news
			// only if it differs, and then only a rescan can tell.
			if !a.retained.Holds(m) {
				a.retained.SuspectReplay(m)
				a.scans.request()
			}
			d.Ack()
			return
		}
	case modeDrain:
		if m.Retain && datasub.IsReplayID(d.SubID) {
			// The broker's replay of a retained message to a run that
			// stopped before taking it: not a publish. As a write it
			// would be stamped now and undo newer writes and deletions
			// elsewhere; the scan learned the value already.
			d.Ack()
			return
		}
		a.metrics.drained.Inc()
		c.taken.Add(1)
		done = c.untake
	}
	if m.Retain {
		m.Written = a.retained.StampLocal(m, time.Now())
	}
	a.forwarder.Enqueue(delivery{d: d, done: done})
}

// untake records that a message the drained session took was acknowledged.
func (c *dataConn) untake() {
	if c.taken.Add(-1) == 0 {
		select {
		case c.acked <- struct{}{}:
		default:
		}
	}
}

// waitTaken waits until every message the drained session took was
// acknowledged, or timeout.
func (c *dataConn) waitTaken(ctx context.Context, timeout time.Duration) (ok bool, err error) {
	limit := time.After(timeout)
	for c.taken.Load() > 0 {
		select {
		case <-c.acked:
		case <-limit:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	return true, nil
}

// mark publishes marker seq to the session itself and waits until it comes
// back: every message the broker queued for the session before it has then
// arrived.
func (c *dataConn) mark(ctx context.Context, seq uint64) error {
	c.sendMark(seq)
	for c.lastMark.Load() < seq {
		select {
		case <-c.marked:
		case <-c.sess.Done():
			return fmt.Errorf("data session %s: %w", c.id, errOrClosed(c.sess.Err()))
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// sendMark publishes marker seq to the session itself, with the token.
func (c *dataConn) sendMark(seq uint64) {
	payload := binary.BigEndian.AppendUint64(nil, seq)
	payload = append(payload, c.markToken[:]...)
	c.sess.Publish(message.Message{Topic: c.markTopic, Payload: payload, QoS: 1}, nil)
}

// ownMarker reports whether payload is a marker this run published: a
// sequence number and the token.
func (c *dataConn) ownMarker(payload []byte) bool {
	return len(payload) == 8+len(c.markToken) && subtle.ConstantTimeCompare(payload[8:], c.markToken[:]) == 1
}

// subscribeMarker subscribes the session to its own marker topic (No Local
// off: the session publishes the markers itself).
func (c *dataConn) subscribeMarker(ctx context.Context) error {
	return c.sess.Subscribe(ctx, session.Subscription{Filter: c.markTopic, QoS: 1})
}

// dataFilters keeps the live data session's filters on what it must hold:
// the wanted side is read from the router and the retained store, the held
// side is the set's (datasub.Set). The follower (the broker loop's
// goroutine running follow, one per broker connection) owns the held side
// and writes heldGen, liveID and held; the forwarding loop and the readers
// that learn retained topics bump wantGen and signal changed; HTTP and
// /metrics read. Every shared field is atomic or a channel.
type dataFilters struct {
	all      bool // data_subscription all: the session holds "#"
	router   *forward.Router
	retained *retained.Store
	log      *slog.Logger

	changed chan struct{} // the wanted filters may have changed (capacity 1)
	// wantGen counts changes of what the data session must hold; heldGen is
	// the last generation its filters were found to match.
	wantGen, heldGen atomic.Uint64
	liveID           atomic.Pointer[string] // the live data session's client id
	held             atomic.Int64           // filters it holds
	// aggWildcards and aggFilters are the last wanted set's aggregation
	// (datasub.Aggregate): wildcards subscribed in place of exact filters,
	// and how many exact filters they stand for.
	aggWildcards, aggFilters atomic.Int64
}

func newDataFilters(all bool, router *forward.Router, store *retained.Store, log *slog.Logger, reg prometheus.Registerer) *dataFilters {
	f := &dataFilters{all: all, router: router, retained: store, log: log, changed: make(chan struct{}, 1)}
	metrics := promauto.With(reg)
	metrics.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "moha_data_subscriptions",
		Help: "Topic filters the agent's data session holds on the local broker: what peers need, plus topics holding a retained message.",
	}, func() float64 { return float64(f.held.Load()) })
	metrics.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "moha_data_aggregated_wildcards",
		Help: "Single-level wildcards the data session subscribes in place of dense sets of exact peer filters (data_subscription interest). What they bring that no peer wanted is counted in moha_unrouted_messages_total.",
	}, func() float64 { return float64(f.aggWildcards.Load()) })
	metrics.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "moha_data_aggregated_filters",
		Help: "Exact peer filters the data session's aggregated wildcards stand for (not subscribed one by one).",
	}, func() float64 { return float64(f.aggFilters.Load()) })
	return f
}

// follow keeps the live session's filters on what peers need until ctx
// ends or the session fails. A step is sent as soon as the set allows it,
// followed by its marker; the markers coming back end the steps. It closes
// held once the session holds what was wanted when it started (interest
// may change all the time: waiting for a quiet moment could wait forever).
func (f *dataFilters) follow(ctx context.Context, c *dataConn, held chan<- struct{}) error {
	f.liveID.Store(&c.id)
	for {
		gen := f.wantGen.Load()
		step, behind := c.set.Next(f.wanted())
		if step != nil {
			f.log.Debug("data session subscriptions change", "session", c.id, "step", step.Seq, "subscribe", len(step.Subscribe), "unsubscribe", len(step.Unsubscribe))
			if err := c.apply(ctx, step); err != nil {
				return fmt.Errorf("data session %s: %w", c.id, err)
			}
			c.sendMark(step.Seq)
		}
		if held != nil {
			close(held)
			held = nil
		}
		if step != nil {
			continue
		}
		if !behind {
			f.heldGen.Store(gen) // every SUBSCRIBE wanted so far was acknowledged
		}
		select {
		case <-f.changed:
		case <-c.marked:
			c.set.Done(c.lastMark.Load())
			f.held.Store(int64(c.set.Len()))
		case <-ctx.Done():
			return nil
		case <-c.sess.Done():
			return fmt.Errorf("data session %s: %w", c.id, errOrClosed(c.sess.Err()))
		}
	}
}

// apply sends one step's packets, in order.
func (c *dataConn) apply(ctx context.Context, step *datasub.Step) error {
	for _, p := range step.Subscribe {
		var rh byte = 2 // no retained replay: a resubscribe must not resend them all
		if p.Replay {
			rh = 0
		}
		for chunk := range slices.Chunk(p.Filters, subscribeChunk) {
			subs := make([]session.Subscription, len(chunk))
			for i, f := range chunk {
				// No Local keeps the agent's republished messages from
				// coming back; Retain As Published keeps retained flags.
				subs[i] = session.Subscription{Filter: f, QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: rh, ID: p.ID}
			}
			if err := c.sess.Subscribe(ctx, subs...); err != nil {
				return err
			}
		}
	}
	for chunk := range slices.Chunk(step.Unsubscribe, subscribeChunk) {
		if err := c.sess.Unsubscribe(ctx, chunk...); err != nil {
			return err
		}
	}
	return nil
}

// wanted returns the filters the live data session must hold (filter
// → replay retained). With data_subscription all that is "#". With interest
// it is what peers need ("$" topics aside), less exact filters a wanted
// wildcard covers, with dense sets of exact filters aggregated into a
// single-level wildcard (datasub.Aggregate: the broker holds one filter,
// not a million; the router still routes by the exact ones), and every
// topic holding a retained message, with a replay of it (a write between
// learning the value and subscribing is not missed). Retained topics stay
// subscribed while wildcards come and go: each new subscription would
// replay them all.
func (f *dataFilters) wanted() map[string]bool {
	if f.all {
		// Every message: the replay history closes the subscribe window
		// (docs/ARCHITECTURE.md, "The subscribe window"). "#" sees every
		// retained write too; those between the startup scan and its
		// SUBACK are found by the rescan that follows it (runBroker).
		return map[string]bool{"#": false}
	}
	want := map[string]bool{}
	wild := topic.NewTrie()
	f.router.EachWanted(func(filter string) {
		// "$" topics ($SYS and the like) are the local broker's own: they
		// never cross, as "#" never matched them.
		if strings.HasPrefix(filter, "$") {
			return
		}
		want[filter] = false
		if strings.ContainsAny(filter, "+#") {
			_, _ = wild.Add(filter)
		}
	})
	for filter := range want {
		if !strings.ContainsAny(filter, "+#") && wild.Matches(filter) {
			delete(want, filter)
		}
	}
	agg := datasub.Aggregate(want, datasub.AggregateMin)
	f.aggWildcards.Store(int64(agg.Wildcards))
	f.aggFilters.Store(int64(agg.Filters))
	f.addRetainedTopics(want)
	return want
}

// addRetainedTopics adds every topic holding a retained message, with a
// replay of it.
func (f *dataFilters) addRetainedTopics(want map[string]bool) {
	for _, t := range f.retained.Topics() {
		if topic.ValidateFilter(t) == nil {
			want[t] = true
		}
	}
}

// current reports whether the live data session holds what peers need as
// of now, the broker sessions being up: every change of interest seen so
// far is applied.
func (f *dataFilters) current() bool {
	return f.heldGen.Load() == f.wantGen.Load()
}

// changing marks the data session not current from now until the follower
// has seen the change (notify, after).
func (f *dataFilters) changing() { f.wantGen.Add(1) }

// notify tells the follower that the wanted filters may have changed.
func (f *dataFilters) notify() {
	f.wantGen.Add(1)
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// status is /status's data section; up: the broker sessions are.
func (f *dataFilters) status(up bool) status.DataStatus {
	d := status.DataStatus{
		Filters:             int(f.held.Load()),
		Current:             up && f.current(),
		AggregatedWildcards: int(f.aggWildcards.Load()),
		AggregatedFilters:   int(f.aggFilters.Load()),
	}
	if id := f.liveID.Load(); id != nil {
		d.ClientID = *id
	}
	return d
}

// drain takes what an earlier run's data session queued, then ends it. With
// partnered, the live session already holds every wanted filter, so what
// the old session gets after its marker the live one gets too: dropped.
// Without (both ids left with a session), it takes everything until it ends.
func (a *Agent) drain(ctx context.Context, c *dataConn, partnered bool) error {
	c.partnered.Store(partnered) // before the marker: the reader reads it when it comes
	if err := c.subscribeMarker(ctx); err != nil {
		return fmt.Errorf("data session %s: %w", c.id, err)
	}
	if err := c.mark(ctx, 1); err != nil {
		return err
	}
	ok, err := c.waitTaken(ctx, drainAckTimeout)
	if err != nil {
		return err
	}
	if !ok {
		a.log.Warn("ending an old data session before its messages were acknowledged", "session", c.id, "unacknowledged", c.taken.Load())
	}
	if err := a.endSession(ctx, c); err != nil {
		return err
	}
	a.log.Info("drained the data session of an earlier run", "session", c.id)
	return nil
}

// endSession closes c and discards its session: a connection with clean
// start. (A DISCONNECT with session expiry 0 does not remove a session
// Mosquitto 2.0.11 restored from persistence: those never expire.)
func (a *Agent) endSession(ctx context.Context, c *dataConn) error {
	c.sess.Close()
	cfg := a.sessionConfig(c.id)
	cfg.CleanStart = true
	s, err := session.Dial(ctx, cfg, nil)
	if err != nil {
		return fmt.Errorf("data session %s: end: %w", c.id, err)
	}
	return s.Close()
}

// startData connects both data sessions and returns the live one and the
// ones to drain. A session that is not present (nothing left there) is
// fresh: one becomes live, the other is ended. With both present (an
// earlier run stopped mid-drain), the first is drained on its own before
// its id is reused: what only its filters matched in that moment is lost.
func (a *Agent) startData(ctx context.Context) (live *dataConn, old []*dataConn, err error) {
	conns, err := a.dialData(ctx)
	if err != nil {
		return nil, nil, err
	}
	if conns[0].sess.SessionPresent() && conns[1].sess.SessionPresent() {
		a.log.Warn("both data sessions left by an earlier run: draining one without a live session", "session", conns[0].id)
		if err := a.drain(ctx, conns[0], false); err != nil {
			closeData(conns)
			return nil, nil, err
		}
		closeData(conns)
		again, err := a.dialData(ctx)
		if err != nil {
			return nil, nil, err
		}
		conns = again
	}
	for _, c := range conns {
		switch {
		case c.sess.SessionPresent():
			old = append(old, c)
		case live == nil:
			live = c
		default: // created by this connect: nothing to keep
			if err := a.endSession(ctx, c); err != nil {
				closeData(conns)
				return nil, nil, err
			}
		}
	}
	if live == nil {
		closeData(conns)
		return nil, nil, errors.New("data session: no free client id")
	}
	return live, old, nil
}
