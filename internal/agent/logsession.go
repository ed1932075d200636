package agent

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moha-project/moha/internal/interest"
	"github.com/moha-project/moha/internal/session"
)

const (
	// The log session is persistent, so that the broker queues the lines
	// logged while it is down (a reconnect, a broker restart with
	// persistence) and nothing is missed. A short expiry: an agent gone
	// for longer starts afresh anyway.
	logSessionExpiry = 300
	// logResumeWithin is how long the log session may be away and still
	// resume without a missed line: Mosquitto gives its log lines a
	// message expiry of 20 s.
	logResumeWithin = 15 * time.Second
	// uptimeSlack absorbs the whole seconds of $SYS/broker/uptime.
	uptimeSlack = 3 * time.Second
	// uptimeWithin is how long a resumed log session waits for the first
	// live uptime (published every sys_interval) before it gives up on
	// proving that nothing was missed.
	uptimeWithin = 5 * time.Second
	brokerUptime = "$SYS/broker/uptime"
)

// logResume is what the agent knows of its log session across reconnects:
// whether a new connection resumed it without a missed line. The broker
// loop and the log session's reader use it, one after the other.
type logResume struct {
	mu        sync.Mutex
	persisted bool      // a log session of this run exists: resume it
	lastAt    time.Time // when the last message arrived on it
	uptime    time.Duration
	uptimeAt  time.Time
	pending   bool   // resumed: decide at the first live uptime
	attempt   uint64 // counts connections, so that a late timeout knows its own
	// vanished: the broker had discarded the log session although the
	// agent was away for less than its expiry; the first live uptime
	// tells a broker restart from a client that took the id with clean
	// start (a foreign session).
	vanished bool
}

// dialLog connects the log session. A new run first ends what an earlier
// run left (its queued lines would be replayed into a table that did not
// see what came before them, and old connects would look new to the
// takeover bookkeeping); the session is then created with clean start off,
// as Mosquitto 2.0.11 saves only such sessions across a restart.
func (a *Agent) dialLog(ctx context.Context, handle func(*session.Delivery)) (*session.Session, error) {
	cfg := a.sessionConfig(a.logClientID())
	a.logState.mu.Lock()
	fresh := !a.logState.persisted
	a.logState.mu.Unlock()
	if fresh {
		cfg.CleanStart = true
		old, err := session.Dial(ctx, cfg, nil)
		if err != nil {
			return nil, err
		}
		old.Close()
	}
	cfg.CleanStart = false
	cfg.SessionExpiry = logSessionExpiry
	return session.Dial(ctx, cfg, handle)
}

// logConnected decides, once the log session is up, whether the table may
// resume: the broker kept the session (it queued the lines logged
// meanwhile) and the session was away for less than the lines live. The
// last check, that the broker did not restart without a clean stop, waits
// for the first live uptime (onUptime). fresh reports a clean start, after
// which the own tracked subscriptions start empty.
func (a *Agent) logConnected(s *session.Session) (fresh bool) {
	a.logState.mu.Lock()
	defer a.logState.mu.Unlock()
	fresh = !a.logState.persisted
	a.logState.persisted = true
	a.logState.attempt++
	switch gap := time.Since(a.logState.lastAt); {
	case fresh:
		// The table has seen no line yet (it starts degraded): a
		// suspension from failed attempts before this one ends here.
		a.table.Resume()
	case !s.SessionPresent():
		a.table.SessionLost("the log session was not resumed: log lines were missed")
		a.logState.vanished = gap < logSessionExpiry*time.Second-logResumeWithin
	case gap > logResumeWithin:
		a.table.SessionLost(fmt.Sprintf("the log session was away %v: log lines may have expired", gap.Round(time.Second)))
	default:
		a.logState.pending = true
		attempt := a.logState.attempt
		time.AfterFunc(uptimeWithin, func() { a.uptimeMissing(attempt) })
	}
	return fresh
}

// uptimeMissing gives up on a resumption still waiting for its proof.
func (a *Agent) uptimeMissing(attempt uint64) {
	a.logState.mu.Lock()
	defer a.logState.mu.Unlock()
	if a.logState.pending && a.logState.attempt == attempt {
		a.logState.pending = false
		a.table.SessionLost(fmt.Sprintf("no $SYS/broker/uptime within %v of resuming the log session: whether lines were missed is unknown", uptimeWithin))
	}
}

// onLogMessage notes that the log session is alive.
func (a *Agent) onLogMessage(now time.Time) {
	a.logState.mu.Lock()
	a.logState.lastAt = now
	a.logState.mu.Unlock()
}

// onUptime follows the broker's uptime. The first live one after a resumed
// log session comes after every line queued for it: the table resumes
// then, unless the broker restarted without the clean stop (and saved
// database) whose lines told the table what it restored.
func (a *Agent) onUptime(payload []byte, now time.Time) {
	secs, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(string(payload)), " seconds"), 10, 64)
	if err != nil {
		return
	}
	uptime := time.Duration(secs) * time.Second
	a.logState.mu.Lock()
	defer a.logState.mu.Unlock()
	expected := a.logState.uptime + now.Sub(a.logState.uptimeAt)
	restarted := uptime+uptimeSlack < expected
	if a.logState.vanished {
		a.logState.vanished = false
		if !restarted {
			a.security.event("foreign_session", "the log session was discarded while the broker kept running: a client connected with its id and clean start (the cluster secret may have leaked, or two agents run as this node)", "role", "log")
		}
	}
	if a.logState.pending {
		a.logState.pending = false
		if restarted && !a.table.StoppedCleanly() {
			a.table.SessionLost("the broker restarted without a clean stop: what it restored is older than the log")
		} else {
			a.table.Resume()
		}
	}
	a.logState.uptime, a.logState.uptimeAt = uptime, now
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
		a.scans.countChanged(string(m.Payload))
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
