package agent

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moha-project/moha/internal/interest"
	"github.com/moha-project/moha/internal/message"
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

// brokerLog follows what the log session carries besides the interest
// lines: whether a reconnect resumed the session without a missed line
// (resume), the broker's $SYS counters (subscriptions, clients, retained
// messages, uptime, drops), and the probe that makes the broker publish a
// fresh subscription count. The log session's reader calls onSys and
// ownOverflow; the broker loop calls dial and connected; nudgeCount runs on
// a goroutine of its own per broker connection; a timer calls
// uptimeMissing. resume is under its mutex, lastCount, countApplied and the
// drop counts HTTP reads are atomic, drops.last is the reader's only.
type brokerLog struct {
	session       session.Config // the log session's
	table         *interest.Table
	metrics       *metrics
	log           *slog.Logger
	security      *securityLog
	retainedCount func(string) // the broker's retained count, as published

	resume       logResume
	drops        brokerDrops
	lastCount    atomic.Int64  // unix nanos of the last live subscription count
	countApplied atomic.Uint64 // the table's Applied() when that count arrived
}

// newBrokerLog: cfg is the log session's session config; retainedCount
// receives the broker's retained count (the retained scans').
func newBrokerLog(cfg session.Config, table *interest.Table, m *metrics, log *slog.Logger, security *securityLog, retainedCount func(string)) *brokerLog {
	b := &brokerLog{session: cfg, table: table, metrics: m, log: log, security: security, retainedCount: retainedCount}
	b.drops.last = -1
	return b
}

// dial connects the log session. A new run first ends what an earlier
// run left (its queued lines would be replayed into a table that did not
// see what came before them, and old connects would look new to the
// takeover bookkeeping); the session is then created with clean start off,
// as Mosquitto 2.0.11 saves only such sessions across a restart.
func (b *brokerLog) dial(ctx context.Context, handle func(*session.Delivery)) (*session.Session, error) {
	cfg := b.session
	b.resume.mu.Lock()
	fresh := !b.resume.persisted
	b.resume.mu.Unlock()
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

// connected decides, once the log session is up, whether the table may
// resume: the broker kept the session (it queued the lines logged
// meanwhile) and the session was away for less than the lines live. The
// last check, that the broker did not restart without a clean stop, waits
// for the first live uptime (onUptime). fresh reports a clean start, after
// which the own tracked subscriptions start empty.
func (b *brokerLog) connected(s *session.Session) (fresh bool) {
	b.resume.mu.Lock()
	defer b.resume.mu.Unlock()
	fresh = !b.resume.persisted
	b.resume.persisted = true
	b.resume.attempt++
	switch gap := time.Since(b.resume.lastAt); {
	case fresh:
		// The table has seen no line yet (it starts degraded): a
		// suspension from failed attempts before this one ends here.
		b.table.Resume()
	case !s.SessionPresent():
		b.table.SessionLost("the log session was not resumed: log lines were missed")
		b.resume.vanished = gap < logSessionExpiry*time.Second-logResumeWithin
	case gap > logResumeWithin:
		b.table.SessionLost(fmt.Sprintf("the log session was away %v: log lines may have expired", gap.Round(time.Second)))
	default:
		b.resume.pending = true
		attempt := b.resume.attempt
		time.AfterFunc(uptimeWithin, func() { b.uptimeMissing(attempt) })
	}
	return fresh
}

// uptimeMissing gives up on a resumption still waiting for its proof.
func (b *brokerLog) uptimeMissing(attempt uint64) {
	b.resume.mu.Lock()
	defer b.resume.mu.Unlock()
	if b.resume.pending && b.resume.attempt == attempt {
		b.resume.pending = false
		b.table.SessionLost(fmt.Sprintf("no $SYS/broker/uptime within %v of resuming the log session: whether lines were missed is unknown", uptimeWithin))
	}
}

// onLogMessage notes that the log session is alive.
func (b *brokerLog) onLogMessage(now time.Time) {
	b.resume.mu.Lock()
	b.resume.lastAt = now
	b.resume.mu.Unlock()
}

// onUptime follows the broker's uptime. The first live one after a resumed
// log session comes after every line queued for it: the table resumes
// then, unless the broker restarted without the clean stop (and saved
// database) whose lines told the table what it restored.
func (b *brokerLog) onUptime(payload []byte, now time.Time) {
	secs, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(string(payload)), " seconds"), 10, 64)
	if err != nil {
		return
	}
	uptime := time.Duration(secs) * time.Second
	b.resume.mu.Lock()
	defer b.resume.mu.Unlock()
	expected := b.resume.uptime + now.Sub(b.resume.uptimeAt)
	restarted := uptime+uptimeSlack < expected
	if b.resume.vanished {
		b.resume.vanished = false
		if !restarted {
			b.security.event("foreign_session", "the log session was discarded while the broker kept running: a client connected with its id and clean start (the cluster secret may have leaked, or two agents run as this node)", "role", "log")
		}
	}
	if b.resume.pending {
		b.resume.pending = false
		if restarted && !b.table.StoppedCleanly() {
			b.table.SessionLost("the broker restarted without a clean stop: what it restored is older than the log")
		} else {
			b.table.Resume()
		}
	}
	b.resume.uptime, b.resume.uptimeAt = uptime, now
}

// nudgeCount makes the broker publish a fresh subscription count while the
// table needs one (needsFreshCount). Mosquitto publishes the count only
// when it differs from the last value it published, so after an agent
// restart (its log session's subscriptions gone and back within one
// interval) no count may ever come.
// Toggling one probe subscription moves the count by one each time, and of
// two neighbouring values at least one differs from the last published one.
func (b *brokerLog) nudgeCount(ctx context.Context, logSess *session.Session) {
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
		if !b.needsFreshCount() || time.Since(time.Unix(0, b.lastCount.Load())) < every {
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
			b.log.Debug("subscription-count probe failed", "err", err)
			continue
		}
		probing = !probing
	}
}

// needsFreshCount: the table is degraded, or it holds uncertain sessions
// (offline MQTT v5, expiry unknown) and log lines arrived since the last
// count, which may have ended them.
func (b *brokerLog) needsFreshCount() bool {
	if degraded, _ := b.table.Degraded(); degraded {
		return true
	}
	return b.table.Stats().Uncertain > 0 && b.table.Applied() != b.countApplied.Load()
}

// onSys notes that the log session is alive and follows the broker's
// $SYS counters; false for a log line, which the caller parses.
func (b *brokerLog) onSys(m *message.Message, now time.Time) bool {
	b.onLogMessage(now)
	switch m.Topic {
	case brokerUptime:
		if !m.Retain {
			b.onUptime(m.Payload, now)
		}
	case brokerDroppedTopic:
		b.onBrokerDropped(m.Payload)
	case clientsTotal:
		b.onClientsTotal(m)
	case retainedCount:
		b.retainedCount(string(m.Payload))
	case subscriptionCount:
		b.onSubscriptionCount(m)
	default:
		return false
	}
	return true
}

// onClientsTotal forgets the offline MQTT v5 sessions the broker's client
// count shows expired.
func (b *brokerLog) onClientsTotal(m *message.Message) {
	n, err := strconv.Atoi(strings.TrimSpace(string(m.Payload)))
	if err != nil || m.Retain {
		return // stale (retained) or unreadable: the next one will do
	}
	if forgot := b.table.ReconcileClients(n); forgot > 0 {
		b.log.Info("forgot offline MQTT v5 sessions that expired unseen", "sessions", forgot, "clients_total", n)
	}
}

// onSubscriptionCount reconciles the table with the broker's live
// subscription count.
func (b *brokerLog) onSubscriptionCount(m *message.Message) {
	b.log.Debug("broker subscription count", "payload", string(m.Payload), "retain", m.Retain)
	if m.Retain {
		return // the retained copy is a stale snapshot, not ordered with the log lines
	}
	b.lastCount.Store(time.Now().UnixNano())
	b.countApplied.Store(b.table.Applied())
	n, err := strconv.Atoi(strings.TrimSpace(string(m.Payload)))
	if err != nil {
		b.metrics.logErrors.Inc()
		b.log.Warn("unreadable subscription count", "payload", truncate(string(m.Payload)))
		return
	}
	b.table.Reconcile(n)
}

// onLogLine feeds one log-session message to the interest table (and the
// takeover bookkeeping), and returns the parsed line. It runs on the
// session's reader and does not block.
func (a *Agent) onLogLine(d *session.Delivery) (ev interest.Event, err error) {
	defer d.Ack()
	m := &d.Message
	if a.brokerLog.onSys(m, time.Now()) {
		return ev, nil
	}
	ev, err = interest.ParseLine(m.Topic, m.Payload)
	if err == nil && ev.Kind == interest.Connected && a.isOwnClient(ev.ClientID) {
		a.checkOwnConnect(ev.ClientID, ev.From)
	}
	if err == nil && ev.Kind == interest.QueueDropped && a.isOwnClient(ev.ClientID) {
		a.brokerLog.ownOverflow(ev.ClientID, a.ids.role(ev.ClientID))
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
