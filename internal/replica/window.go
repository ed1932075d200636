package replica

import "time"

// Release returns how many of the oldest held messages (their arrival
// times, oldest first) a replica may acknowledge now. While its client is
// online at its holder, a message the holder had window to deliver is the
// client's: it goes; the recent ones stay (a failover redelivers them: at
// least once). "Had window" is judged by holderHeard, when the replica's
// node last heard from the holder: a message goes only once the holder was
// heard from window after it arrived. The link being up is not proof
// enough: a holder that dies is noticed seconds later, and in those seconds
// the messages of its last moments would otherwise age past the window and
// go. With the client offline, or the holder not heard from (zero time),
// everything stays, as the holder's broker keeps it.
func Release(arrived []time.Time, window time.Duration, clientOnline bool, holderHeard time.Time) int {
	if !clientOnline || holderHeard.IsZero() {
		return 0
	}
	n := 0
	for n < len(arrived) && !arrived[n].Add(window).After(holderHeard) {
		n++
	}
	return n
}
