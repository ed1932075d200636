package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
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
		// Until the log session resumes (brokerLog.connected, onUptime), the
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
		a.brokerErr = ""
	} else {
		a.brokerErr = err.Error()
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
	logSess, err := a.brokerLog.dial(ctx, func(d *session.Delivery) {
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
	if fresh := a.brokerLog.connected(logSess); fresh || !logSess.SessionPresent() {
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
	if err := a.scans.scan(ctx); err != nil {
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
	wg.Go(func() { followErr <- a.dataFilters.follow(runCtx, live, held) })
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

	wg.Go(func() { a.brokerLog.nudgeCount(runCtx, logSess) })
	wg.Go(func() { a.scans.rescanLoop(runCtx) })
	if a.cluster.SubscribesAll() {
		// A retained write on a new topic between the startup scan and
		// the "#" SUBACK was seen by neither.
		a.scans.request()
	}

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
