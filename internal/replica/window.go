package replica

import "time"

// Release returns how many of the oldest held messages (their arrival
// times, oldest first) a replica may acknowledge now. While its client is
// online at a holder that is reachable, the client has had what is older
// than window: those go, the recent ones stay (a failover redelivers them:
// at least once). Otherwise — the client offline, or its holder not
// reachable (dead, perhaps) — everything stays, as the holder's broker
// keeps it.
func Release(arrived []time.Time, now time.Time, window time.Duration, clientOnline, holderUp bool) int {
	if !clientOnline || !holderUp {
		return 0
	}
	n := 0
	for n < len(arrived) && now.Sub(arrived[n]) >= window {
		n++
	}
	return n
}
