package agent

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moha-project/moha/internal/mesh"
	"github.com/moha-project/moha/internal/replica"
	"github.com/moha-project/moha/internal/session"
)

const (
	// replicaRetry is how long a replica waits before connecting again
	// after its connection ended: long enough for the broker's log line of
	// a client taking the session over to arrive first.
	replicaRetry = time.Second
	// replicaTick is how often a replica acknowledges what its window let go.
	replicaTick = 250 * time.Millisecond
)

// replicaRunner keeps one replica on the local broker: a connection with
// the client's id, its filters subscribed, and every QoS 1/2 message it is
// sent held unacknowledged — the broker keeps those in the session and
// sends them again to the client that takes it over — until
// replica.Release lets it go. Its goroutine owns the connection.
type replicaRunner struct {
	r       *replicas
	id      string
	started atomic.Bool
	wake    chan struct{} // capacity 1: the state below changed

	mu       sync.Mutex
	note     mesh.SessionNote
	holder   string
	holderUp bool
	ending   bool // end the session on the broker, then return
	stopping bool // return, leaving the session to the client that took it

	heldMu  sync.Mutex
	held    []*session.Delivery // QoS 1/2 deliveries not acknowledged, oldest first
	arrived []time.Time         // when each arrived
}

func newReplicaRunner(r *replicas, id, holder string, note mesh.SessionNote, holderUp bool) *replicaRunner {
	return &replicaRunner{r: r, id: id, holder: holder, note: note, holderUp: holderUp, wake: make(chan struct{}, 1)}
}

func (rn *replicaRunner) startOnce() bool { return rn.started.CompareAndSwap(false, true) }

func (rn *replicaRunner) signal() {
	select {
	case rn.wake <- struct{}{}:
	default:
	}
}

func (rn *replicaRunner) update(note mesh.SessionNote, holder string, holderUp bool) {
	rn.mu.Lock()
	rn.note, rn.holder, rn.holderUp = note, holder, holderUp
	rn.mu.Unlock()
	rn.signal()
}

func (rn *replicaRunner) setHolderUp(up bool) {
	rn.mu.Lock()
	rn.holderUp = up
	rn.mu.Unlock()
	rn.signal()
}

func (rn *replicaRunner) end() {
	rn.mu.Lock()
	rn.ending = true
	rn.mu.Unlock()
	rn.signal()
}

func (rn *replicaRunner) stop() {
	rn.mu.Lock()
	rn.stopping = true
	rn.mu.Unlock()
	rn.signal()
}

// holderName is the node holding the session (update may change it).
func (rn *replicaRunner) holderName() string {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.holder
}

func (rn *replicaRunner) state() (note mesh.SessionNote, holderUp, ending, stopping bool) {
	rn.mu.Lock()
	defer rn.mu.Unlock()
	return rn.note, rn.holderUp, rn.ending, rn.stopping
}

// run keeps the replica connected until it ends, stops or ctx ends (the
// agent stops: the session stays on the broker).
func (rn *replicaRunner) run(ctx context.Context) {
	defer rn.r.ids.CompareAndDelete(rn.id, rn)
	a := rn.r.a
	for attempt := 0; ; attempt++ {
		if attempt > 0 && !rn.pause(ctx, replicaRetry) {
			return
		}
		if _, _, ending, stopping := rn.state(); ending || stopping {
			rn.finish(ending)
			return
		}
		if info, ok := a.table.Session(rn.id); attempt > 0 && ok && info.Connected {
			continue // a client holds the session now: promote will stop us
		}
		if !a.sessionUp.Load() {
			continue // the log session must see the replica's lines, or interest is unexplained
		}
		sess, err := rn.connect(ctx)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("session replica: could not connect; will retry", "client", rn.id, "err", err)
			}
			continue
		}
		if done := rn.serve(ctx, sess); done {
			return
		}
	}
}

// pause waits d, or until the runner must end or stop. It reports whether
// to go on.
func (rn *replicaRunner) pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-rn.wake:
			if _, _, ending, stopping := rn.state(); ending || stopping {
				return true
			}
		}
	}
}

func (rn *replicaRunner) connect(ctx context.Context) (*session.Session, error) {
	cfg := rn.r.a.sessionConfig(rn.id)
	// Clean start: Mosquitto 2.0.11 does not save a session created with
	// clean start across a restart, so a replica never outlives its broker's
	// run as an orphan no agent knows; a client taking it over (clean start
	// 0) makes it a saved session.
	cfg.CleanStart = true
	cfg.SessionExpiry = keptSessionExpiry
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rn.heldMu.Lock()
	rn.held, rn.arrived = nil, nil // a new connection starts the replica afresh (clean start)
	rn.heldMu.Unlock()
	return session.Dial(dctx, cfg, rn.hold)
}

// hold is the session's handler: keep every QoS 1/2 message unacknowledged.
func (rn *replicaRunner) hold(d *session.Delivery) {
	if d.Message.QoS == 0 {
		return
	}
	rn.heldMu.Lock()
	rn.held = append(rn.held, d)
	rn.arrived = append(rn.arrived, time.Now())
	rn.heldMu.Unlock()
}

// serve keeps the connection's subscriptions as the holder says and lets
// old messages go, until the connection ends (false: connect again) or
// the runner is done (true).
func (rn *replicaRunner) serve(ctx context.Context, sess *session.Session) (done bool) {
	subscribed := map[string]byte{}
	tick := time.NewTicker(replicaTick)
	defer tick.Stop()
	rn.signal() // subscribe at once
	for {
		select {
		case <-ctx.Done():
			_ = sess.Close() // the session stays: the next run keeps it again
			return true
		case <-sess.Done():
			return false
		case <-rn.wake:
			note, _, ending, stopping := rn.state()
			if ending || stopping {
				_ = sess.Close()
				rn.finish(ending)
				return true
			}
			if err := rn.subscribe(ctx, sess, subscribed, note); err != nil {
				rn.r.a.log.Warn("session replica: could not follow its session's filters; reconnecting", "client", rn.id, "err", err)
				_ = sess.Close()
				return false
			}
		case now := <-tick.C:
			rn.release(now)
		}
	}
}

// subscribe moves the connection's subscriptions to the note's filters.
func (rn *replicaRunner) subscribe(ctx context.Context, sess *session.Session, subscribed map[string]byte, note mesh.SessionNote) error {
	want := map[string]byte{}
	var add []session.Subscription
	for _, f := range note.Filters {
		want[f.Filter] = f.QoS
		if q, ok := subscribed[f.Filter]; !ok || q != f.QoS {
			// Retain handling 2: the client had the retained messages at
			// home; a replica must not queue them again.
			add = append(add, session.Subscription{Filter: f.Filter, QoS: f.QoS, RetainHandling: 2})
		}
	}
	var remove []string
	for f := range subscribed {
		if _, ok := want[f]; !ok {
			remove = append(remove, f)
		}
	}
	slices.Sort(remove)
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if len(remove) > 0 {
		if err := sess.Unsubscribe(sctx, remove...); err != nil {
			return err
		}
	}
	if len(add) > 0 {
		if err := sess.Subscribe(sctx, add...); err != nil {
			return err
		}
	}
	clear(subscribed)
	for f, q := range want {
		subscribed[f] = q
	}
	return nil
}

// release acknowledges the held messages the window lets go.
func (rn *replicaRunner) release(now time.Time) {
	note, holderUp, _, _ := rn.state()
	var heard time.Time
	if holderUp {
		heard = rn.r.a.mesh.LastHeard(rn.holderName())
	}
	rn.heldMu.Lock()
	n := replica.Release(rn.arrived, time.Duration(rn.r.a.cluster.SessionReplicaWindow), note.Online, heard)
	done := rn.held[:n]
	rn.held, rn.arrived = rn.held[n:], rn.arrived[n:]
	rn.heldMu.Unlock()
	for _, d := range done {
		d.Ack()
	}
	rn.r.released.Add(float64(n))
}

// finish ends the session on the broker (a connection with clean start
// and expiry 0), or, when stopping, leaves it to its client.
func (rn *replicaRunner) finish(ending bool) {
	if !ending {
		return
	}
	a := rn.r.a
	cfg := a.sessionConfig(rn.id)
	cfg.CleanStart = true
	cfg.SessionExpiry = 0
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := session.Dial(ctx, cfg, nil)
	if err != nil {
		a.log.Warn("session replica: could not end it on the broker", "client", rn.id, "err", err)
		return
	}
	_ = s.Close()
}
