package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moha-project/moha/internal/interest"
	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/session"
)

const (
	// The data session outlives agent restarts: the broker queues what
	// clients publish while the agent is away (docs/ARCHITECTURE.md, The data path). A day bounds
	// what a decommissioned agent leaves behind.
	dataSessionExpiry = 24 * 60 * 60
	subscriptionCount = "$SYS/broker/subscriptions/count"
	clientsTotal      = "$SYS/broker/clients/total"
	retainedCount     = "$SYS/broker/retained messages/count"
	// probeFilter is a subscription no message ever matches: it only moves
	// the broker's subscription count (see nudgeCount).
	probeFilter    = "$SYS/moha/probe"
	ownLineTimeout = 5 * time.Second
)

// logFilters are what the log session subscribes. The subscribe lines
// come first: the broker then logs every later filter of the SUBSCRIBE to
// it, and the table counts the log session's subscriptions from those
// lines, in order with the counts (TrackOwn).
var logFilters = []string{"$SYS/broker/log/M/#", interest.TopicNotice, interest.TopicError, interest.TopicInfo, subscriptionCount, clientsTotal, retainedCount, brokerUptime, brokerDroppedTopic}

// brokerLoop keeps the two local sessions up, reconnecting with capped
// backoff, until ctx ends or the broker turns out to be unusable.
func (a *Agent) brokerLoop(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		connected, err := a.runBroker(ctx)
		a.setSessionUp(false)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrBrokerLogging) {
			return err
		}
		a.setBrokerError(err)
		a.metrics.brokerReconnects.Inc()
		// Until the log session resumes (logConnected, onUptime), the
		// table over-states.
		a.table.Suspend("lost the broker session: " + err.Error())
		if connected {
			backoff = 100 * time.Millisecond
		}
		a.log.Warn("broker session ended, reconnecting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff + rand.N(backoff/2)):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// setSessionUp records whether the broker sessions are up, and tells the
// peers: while they are down, peers buffer for this node at once instead of
// waiting on it.
func (a *Agent) setSessionUp(up bool) {
	a.sessionUp.Store(up)
	a.mesh.SetBrokerUp(up)
}

func (a *Agent) setBrokerError(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if err == nil {
		a.brokerOK = ""
	} else {
		a.brokerOK = err.Error()
	}
}

func (a *Agent) sessionConfig(clientID string) session.Config {
	b := a.node.Broker
	return session.Config{
		Addr:      b.Address,
		ClientID:  clientID,
		Username:  b.Username,
		Password:  b.Password,
		TLS:       a.brokerTLS,
		KeepAlive: uint16(time.Duration(b.KeepAlive) / time.Second),
		Logger:    a.log,
		Dialed:    func(local net.Addr) { a.dials.note(local, clientID) },
	}
}

// runBroker connects the log session, then the data sessions, and blocks
// until one of them ends. connected reports whether all came up.
func (a *Agent) runBroker(ctx context.Context) (connected bool, err error) {
	ownLine := make(chan struct{})
	var sawOwn bool
	data := a.dataClientIDs()
	logSess, err := a.dialLog(ctx, func(d *session.Delivery) {
		ev, err := a.onLogLine(d)
		// A data session's own connect line proves the broker logs what
		// the agent needs.
		if !sawOwn && err == nil && ev.Kind == interest.Connected && (ev.ClientID == data[0] || ev.ClientID == data[1]) {
			sawOwn = true
			close(ownLine)
		}
	})
	if err != nil {
		return false, fmt.Errorf("log session: %w", err)
	}
	defer logSess.Close()
	if fresh := a.logConnected(logSess); fresh || !logSess.SessionPresent() {
		a.table.ForgetOwn(a.logClientID()) // a new session: its subscriptions start empty
	}
	// Every own session's subscriptions come from its own log lines
	// (TrackOwn), in order with the counts.
	a.table.SetOwnClients(2)
	subs := make([]session.Subscription, len(logFilters))
	for i, f := range logFilters {
		subs[i] = session.Subscription{Filter: f, QoS: 1}
	}
	if err := logSess.Subscribe(ctx, subs...); err != nil {
		return false, fmt.Errorf("log session: subscribe: %w", err)
	}

	live, old, err := a.startData(ctx)
	if err != nil {
		return false, err
	}
	defer closeData(append(old, live))
	select {
	case <-ownLine:
	case <-time.After(ownLineTimeout):
		return false, ErrBrokerLogging
	case <-ctx.Done():
		return false, ctx.Err()
	}
	// Learn what the broker holds retained before the live session asks
	// for replays of it: a replay of a known value is not a new write.
	if err := a.scanRetained(ctx); err != nil {
		return false, fmt.Errorf("retained scan: %w", err)
	}
	if err := live.subscribeMarker(ctx); err != nil {
		return false, fmt.Errorf("data session: subscribe: %w", err)
	}
	live.mode.Store(int32(modeLive))

	var wg sync.WaitGroup
	defer wg.Wait()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	held := make(chan struct{})
	followErr := make(chan error, 1)
	wg.Go(func() { followErr <- a.followInterest(runCtx, live, held) })
	select {
	case <-held:
	case err := <-followErr:
		return false, errOrClosed(err)
	case <-ctx.Done():
		return false, ctx.Err()
	}
	for _, c := range old {
		if err := a.drain(ctx, c, true); err != nil {
			return false, err
		}
	}
	// Only now: a peer's message republished while an old session still
	// took everything could have come back through it.
	a.republisher.setSession(live.sess)
	a.setSessionUp(true)
	a.setBrokerError(nil)
	a.log.Info("broker sessions up", "broker", a.node.Broker.Address, "data_session", live.id, "drained", len(old))

	wg.Go(func() { a.nudgeCount(runCtx, logSess) })
	wg.Go(func() { a.rescanLoop(runCtx) })

	select {
	case <-ctx.Done():
		return true, ctx.Err()
	case err := <-followErr:
		return true, errOrClosed(err)
	case <-live.sess.Done():
		return true, fmt.Errorf("data session: %w", errOrClosed(live.sess.Err()))
	case <-logSess.Done():
		return true, fmt.Errorf("log session: %w", errOrClosed(logSess.Err()))
	}
}

func errOrClosed(err error) error {
	if err == nil {
		return session.ErrClosed
	}
	return err
}

// scanRetained learns the retained messages the broker holds that the agent
// did not see written (restored from persistence, written while it was
// away), for the anti-entropy digest.
func (a *Agent) scanRetained(ctx context.Context) error {
	found := 0
	err := a.scanBroker(ctx, func(m *message.Message) {
		a.retained.LearnScanned(m)
		found++
	})
	if err != nil {
		return err
	}
	a.scanOnce.Do(func() { close(a.scanned) })
	a.log.Debug("retained scan done", "found", found)
	return nil
}

// rescanLoop scans the broker's retained messages each time its retained
// count changed: a retained message on a topic no data subscription matched
// was not seen written. It is forwarded from the scan, and its topic joins
// the data session's filters so that later writes are seen.
func (a *Agent) rescanLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.rescan:
		}
		found := 0
		err := a.scanBroker(ctx, func(m *message.Message) {
			stamp, unseen := a.retained.StampFound(m, time.Now())
			if !unseen {
				return
			}
			msg := *m
			msg.Payload = append([]byte(nil), m.Payload...) // the session reuses its buffer
			msg.Written = stamp
			a.forwarder.Enqueue(scannedWrite{&msg})
			found++
		})
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("retained rescan failed", "err", err)
			}
			continue
		}
		a.metrics.retainedRescans.Inc()
		if found > 0 {
			a.log.Debug("retained rescan found writes not seen", "messages", found)
		}
	}
}

// scanBroker hands fn every retained message the broker holds (not "$"
// topics). A second SUBSCRIBE's SUBACK marks the end: the broker sends the
// first one's retained messages before it. fn runs on the scan session's
// reader; scanBroker returns after its last call.
func (a *Agent) scanBroker(ctx context.Context, fn func(*message.Message)) error {
	cfg := a.sessionConfig(a.scanClientID())
	cfg.CleanStart = true
	s, err := session.Dial(ctx, cfg, func(d *session.Delivery) {
		if d.Message.Retain {
			fn(&d.Message)
		}
	})
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Subscribe(ctx, session.Subscription{Filter: "#", QoS: 0, RetainAsPublished: true}); err != nil {
		return err
	}
	return s.Subscribe(ctx, session.Subscription{Filter: probeFilter, QoS: 0})
}

// nudgeCount makes the broker publish a fresh subscription count while the
// table needs one (needsFreshCount). Mosquitto publishes the count only
// when it differs from the last value it published, so after an agent
// restart (its log session's subscriptions gone and back within one
// interval) no count may ever come.
// Toggling one probe subscription moves the count by one each time, and of
// two neighbouring values at least one differs from the last published one.
func (a *Agent) nudgeCount(ctx context.Context, logSess *session.Session) {
	const every = 2500 * time.Millisecond
	tick := time.NewTicker(every)
	defer tick.Stop()
	probing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !a.needsFreshCount() || time.Since(time.Unix(0, a.lastCount.Load())) < every {
			continue
		}
		// The table counts the probe from its own subscribe and
		// unsubscribe lines, in order with the counts.
		var err error
		if probing {
			err = logSess.Unsubscribe(ctx, probeFilter)
		} else {
			err = logSess.Subscribe(ctx, session.Subscription{Filter: probeFilter, QoS: 0})
		}
		if err != nil {
			a.log.Debug("subscription-count probe failed", "err", err)
			continue
		}
		probing = !probing
	}
}

// needsFreshCount: the table is degraded, or it holds uncertain sessions
// (offline MQTT v5, expiry unknown) and log lines arrived since the last
// count, which may have ended them.
func (a *Agent) needsFreshCount() bool {
	if degraded, _ := a.table.Degraded(); degraded {
		return true
	}
	return a.table.Stats().Uncertain > 0 && a.table.Applied() != a.countApplied.Load()
}

// onLogLine feeds one log-session message to the interest table (and the
// takeover bookkeeping), and returns the parsed line. It runs on the
// session's reader and does not block.
func (a *Agent) onLogLine(d *session.Delivery) (ev interest.Event, err error) {
	defer d.Ack()
	m := &d.Message
	now := time.Now()
	a.onLogMessage(now)
	if m.Topic == brokerUptime {
		if !m.Retain {
			a.onUptime(m.Payload, now)
		}
		return ev, nil
	}
	if m.Topic == brokerDroppedTopic {
		a.onBrokerDropped(m.Payload)
		return ev, nil
	}
	if m.Topic == clientsTotal {
		n, err := strconv.Atoi(strings.TrimSpace(string(m.Payload)))
		if err != nil || m.Retain {
			return ev, nil // stale (retained) or unreadable: the next one will do
		}
		if forgot := a.table.ReconcileClients(n); forgot > 0 {
			a.log.Info("forgot offline MQTT v5 sessions that expired unseen", "sessions", forgot, "clients_total", n)
		}
		return ev, nil
	}
	if m.Topic == retainedCount {
		if n := string(m.Payload); n != a.lastRetainedCount {
			a.lastRetainedCount = n
			a.requestRescan()
		}
		return ev, nil
	}
	if m.Topic == subscriptionCount {
		a.log.Debug("broker subscription count", "payload", string(m.Payload), "retain", m.Retain)
		if m.Retain {
			return ev, nil // the retained copy is a stale snapshot, not ordered with the log lines
		}
		a.lastCount.Store(time.Now().UnixNano())
		a.countApplied.Store(a.table.Applied())
		n, err := strconv.Atoi(strings.TrimSpace(string(m.Payload)))
		if err != nil {
			a.metrics.logErrors.Inc()
			a.log.Warn("unreadable subscription count", "payload", truncate(string(m.Payload)))
			return ev, nil
		}
		a.table.Reconcile(n)
		return ev, nil
	}
	ev, err = interest.ParseLine(m.Topic, m.Payload)
	if err == nil && ev.Kind == interest.Connected && a.isOwnClient(ev.ClientID) {
		a.checkOwnConnect(ev.ClientID, ev.From)
	}
	if err == nil && ev.Kind == interest.QueueDropped && a.isOwnClient(ev.ClientID) {
		a.onOwnOverflow(ev.ClientID)
	}
	maker := madeByNobody
	if err == nil && !a.isOwnClient(ev.ClientID) {
		maker = a.followClient(&ev)
	}
	if applyErr := a.table.ApplyParsed(m.Topic, ev, err); applyErr != nil {
		a.metrics.logErrors.Inc()
		a.log.Warn("broker log line not understood", "topic", m.Topic, "line", truncate(string(m.Payload)), "err", applyErr)
	}
	// After the table has the session: replication reads it.
	a.replicas.connected(ev.ClientID, maker)
	return ev, err
}

// followClient announces a client's connect line (takeovers) and tells
// replication whose session it is. A session replica's own connection
// (any connection from the agent's own address but a takeover's) is not a
// client's: not announced, so no takeover round elsewhere.
func (a *Agent) followClient(ev *interest.Event) sessionMaker {
	if ev.Kind != interest.Connected {
		a.takeovers.OnEvent(ev, time.Now())
		return madeByNobody
	}
	if a.dials.ours(ev.From, ev.ClientID) && !a.takeovers.KickPending(ev.ClientID) {
		// A replica's connection, or the one ending it: its line may come
		// after the replica is gone, so the address decides, not the id.
		return madeByReplica
	}
	if note, ok := a.takeovers.OnEvent(ev, time.Now()); ok {
		a.mesh.AnnounceClient(note)
		return madeByClient
	}
	return madeByNobody
}

func (a *Agent) isOwnClient(id string) bool {
	return a.own[id]
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// scannedWrite is a retained write found by a rescan, for the forwarder:
// the broker has it already, nothing to acknowledge.
type scannedWrite struct{ m *message.Message }

func (w scannedWrite) Msg() *message.Message { return w.m }
func (w scannedWrite) Ack()                  {}

// delivery adapts a data-session delivery to the forwarder; done runs after
// its acknowledgement.
type delivery struct {
	d    *session.Delivery
	done func()
}

func (d delivery) Msg() *message.Message { return &d.d.Message }
func (d delivery) Ack() {
	d.d.Ack()
	d.done()
}
