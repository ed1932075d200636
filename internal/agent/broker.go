package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/moha-project/moha/internal/interest"
	"github.com/moha-project/moha/internal/message"
	"github.com/moha-project/moha/internal/session"
)

const (
	// The data session outlives agent restarts: the broker queues what
	// clients publish while the agent is away (DESIGN.md §1). A day bounds
	// what a decommissioned agent leaves behind.
	dataSessionExpiry = 24 * 60 * 60
	subscriptionCount = "$SYS/broker/subscriptions/count"
	clientsTotal      = "$SYS/broker/clients/total"
	// probeFilter is a subscription no message ever matches: it only moves
	// the broker's subscription count (see nudgeCount).
	probeFilter    = "$SYS/moha/probe"
	ownLineTimeout = 5 * time.Second
)

// logFilters are what the log session subscribes; with the data session's
// "#" they are the agent's own subscriptions in the broker's count.
var logFilters = []string{"$SYS/broker/log/N", "$SYS/broker/log/E", "$SYS/broker/log/M/#", subscriptionCount, clientsTotal}

// brokerLoop keeps the two local sessions up, reconnecting with capped
// backoff, until ctx ends or the broker turns out to be unusable.
func (a *Agent) brokerLoop(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		connected, err := a.runBroker(ctx)
		a.sessionUp.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrBrokerLogging) {
			return err
		}
		a.setBrokerError(err)
		a.metrics.brokerReconnects.Inc()
		// Log lines were missed while the session was down: until the
		// broker's subscription count proves the table right, over-state.
		a.table.SessionLost("lost the broker session: " + err.Error())
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
	}
}

// runBroker connects the log session, then the data session, and blocks
// until either ends. connected reports whether both came up.
func (a *Agent) runBroker(ctx context.Context) (connected bool, err error) {
	ownLine := make(chan struct{})
	var sawOwn bool
	logCfg := a.sessionConfig(a.logClientID())
	logCfg.CleanStart = true
	logSess, err := session.Dial(ctx, logCfg, func(d *session.Delivery) {
		ev, err := a.onLogLine(d)
		// The data session's own connect line proves the broker logs what
		// the agent needs.
		if !sawOwn && err == nil && ev.Kind == interest.Connected && ev.ClientID == a.dataClientID() {
			sawOwn = true
			close(ownLine)
		}
	})
	if err != nil {
		return false, fmt.Errorf("log session: %w", err)
	}
	defer logSess.Close()
	// Set before subscribing: every live count the table sees includes the
	// log session's filters and the data session's persistent "#".
	a.table.SetOwnSubscriptions(1 + len(logFilters))
	a.table.SetOwnClients(2)
	subs := make([]session.Subscription, len(logFilters))
	for i, f := range logFilters {
		subs[i] = session.Subscription{Filter: f, QoS: 1}
	}
	if err := logSess.Subscribe(ctx, subs...); err != nil {
		return false, fmt.Errorf("log session: subscribe: %w", err)
	}

	dataCfg := a.sessionConfig(a.dataClientID())
	dataCfg.SessionExpiry = dataSessionExpiry
	dataCfg.ReceiveMaximum = 65535
	dataSess, err := session.Dial(ctx, dataCfg, func(d *session.Delivery) {
		if d.Message.Retain {
			d.Message.Written = a.retained.stampLocal(&d.Message, time.Now())
		}
		a.forwarder.Enqueue(delivery{d})
	})
	if err != nil {
		return false, fmt.Errorf("data session: %w", err)
	}
	defer dataSess.Close()
	select {
	case <-ownLine:
	case <-time.After(ownLineTimeout):
		return false, ErrBrokerLogging
	case <-ctx.Done():
		return false, ctx.Err()
	}
	// No Local keeps the agent's republished messages from coming back;
	// Retain As Published keeps retained flags; Retain Handling 2 keeps a
	// resubscribe from replaying every retained message (MOSQUITTO.md).
	err = dataSess.Subscribe(ctx, session.Subscription{Filter: "#", QoS: 2, NoLocal: true, RetainAsPublished: true, RetainHandling: 2})
	if err != nil {
		return false, fmt.Errorf("data session: subscribe: %w", err)
	}
	a.republisher.setSession(dataSess)
	if err := a.scanRetained(ctx); err != nil {
		return true, fmt.Errorf("retained scan: %w", err)
	}
	a.sessionUp.Store(true)
	a.setBrokerError(nil)
	a.log.Info("broker sessions up", "broker", a.node.Broker.Address, "session_present", dataSess.SessionPresent())

	nudgeCtx, stopNudge := context.WithCancel(ctx)
	defer stopNudge()
	go a.nudgeCount(nudgeCtx, logSess)

	select {
	case <-ctx.Done():
		return true, ctx.Err()
	case <-dataSess.Done():
		return true, fmt.Errorf("data session: %w", errOrClosed(dataSess.Err()))
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
// away), for the anti-entropy digest. A second SUBSCRIBE's SUBACK marks the
// end: the broker sends the first one's retained messages before it.
func (a *Agent) scanRetained(ctx context.Context) error {
	cfg := a.sessionConfig(a.scanClientID())
	cfg.CleanStart = true
	found := 0
	s, err := session.Dial(ctx, cfg, func(d *session.Delivery) {
		if d.Message.Retain {
			a.retained.learnScanned(&d.Message)
			found++
		}
	})
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Subscribe(ctx, session.Subscription{Filter: "#", QoS: 0, RetainAsPublished: true}); err != nil {
		return err
	}
	if err := s.Subscribe(ctx, session.Subscription{Filter: probeFilter, QoS: 0}); err != nil {
		return err
	}
	a.scanOnce.Do(func() { close(a.scanned) })
	a.log.Debug("retained scan done", "found", found)
	return nil
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
	own := 1 + len(logFilters)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !a.needsFreshCount() || time.Since(time.Unix(0, a.lastCount.Load())) < every {
			continue
		}
		var err error
		if probing {
			err = logSess.Unsubscribe(ctx, probeFilter)
			// Set after the broker removed it: a count that still includes
			// the probe is then at worst an over-statement.
			a.table.SetOwnSubscriptions(own)
		} else {
			// Set before: a count without the probe reads as an over-statement.
			a.table.SetOwnSubscriptions(own + 1)
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
	if err == nil && !a.isOwnClient(ev.ClientID) {
		if note, ok := a.takeovers.onEvent(ev, time.Now()); ok {
			a.mesh.AnnounceClient(note)
		}
	}
	if applyErr := a.table.ApplyParsed(m.Topic, ev, err); applyErr != nil {
		a.metrics.logErrors.Inc()
		a.log.Warn("broker log line not understood", "topic", m.Topic, "line", truncate(string(m.Payload)), "err", applyErr)
	}
	return ev, err
}

func (a *Agent) isOwnClient(id string) bool {
	return id == a.dataClientID() || id == a.logClientID() || id == a.scanClientID()
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// delivery adapts a data-session delivery to the forwarder.
type delivery struct{ d *session.Delivery }

func (d delivery) Msg() *message.Message { return &d.d.Message }
func (d delivery) Ack()                  { d.d.Ack() }
