package agent

import (
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// securityKinds are the kinds of securityLog.event.
var securityKinds = []string{"unproven_marker", "status_refused", "foreign_session"}

// securityLog counts refused attempts (markers without this run's token,
// /status without the token, a foreign client on one of the agent's ids)
// and logs each kind at most once a minute: an attacker must not be able
// to flood the log. The data and log sessions' readers and the HTTP
// handlers call event concurrently; logged is under mu.
type securityLog struct {
	log    *slog.Logger
	events *prometheus.CounterVec // by kind

	mu     sync.Mutex
	logged map[string]time.Time // kind -> last security log line
}

// newSecurityLog makes every kind a series from the start, at 0.
func newSecurityLog(log *slog.Logger, events *prometheus.CounterVec) *securityLog {
	for _, kind := range securityKinds {
		events.WithLabelValues(kind)
	}
	return &securityLog{log: log, events: events, logged: map[string]time.Time{}}
}

// event counts a refused attempt of kind and logs it unless kind was
// logged within the last minute.
func (s *securityLog) event(kind, msg string, args ...any) {
	s.events.WithLabelValues(kind).Inc()
	s.mu.Lock()
	now := time.Now()
	ok := now.Sub(s.logged[kind]) >= time.Minute
	if ok {
		s.logged[kind] = now
	}
	s.mu.Unlock()
	if ok {
		s.log.Warn(msg, append([]any{"kind", kind}, args...)...)
	}
}
