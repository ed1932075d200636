package agent

import "time"

// securityEvent counts a refused attempt of kind and logs it at most once a
// minute per kind (an attacker must not be able to flood the log).
func (a *Agent) securityEvent(kind, msg string, args ...any) {
	a.metrics.securityEvents.WithLabelValues(kind).Inc()
	a.secLogMu.Lock()
	last := a.secLogged[kind]
	now := time.Now()
	ok := now.Sub(last) >= time.Minute
	if ok {
		if a.secLogged == nil {
			a.secLogged = map[string]time.Time{}
		}
		a.secLogged[kind] = now
	}
	a.secLogMu.Unlock()
	if ok {
		a.log.Warn(msg, append([]any{"kind", kind}, args...)...)
	}
}
