package agent

import (
	"strconv"
	"strings"
	"sync/atomic"
)

// brokerDroppedTopic is the broker's count of messages it dropped for full
// queues, all its clients together.
const brokerDroppedTopic = "$SYS/broker/publish/messages/dropped"

// brokerDrops is what the local broker drops for full queues: each time it
// starts dropping for one of the agent's own sessions (logged once per
// connection), and its overall count. The log session's reader writes
// (through brokerLog); HTTP handlers read.
type brokerDrops struct {
	overflows atomic.Uint64 // own sessions' queue overflows seen
	dropped   atomic.Uint64 // the broker's count, as last published
	last      int64         // log session reader only: previous published value, -1 before the first
}

// ownOverflow records that the broker drops messages queued for one of the
// agent's sessions (id, of role): they are lost, which must not go unseen.
func (b *brokerLog) ownOverflow(id, role string) {
	b.drops.overflows.Add(1)
	b.metrics.brokerQueueDrops.WithLabelValues(role).Inc()
	b.log.Error("the broker drops messages queued for the agent's session: they are lost (raise max_queued_messages, or find why the agent is slow)",
		"session", id)
}

// onBrokerDropped follows $SYS/broker/publish/messages/dropped: the
// counter grows by what the broker added since the last value (a smaller
// value means the broker restarted and counts from zero).
func (b *brokerLog) onBrokerDropped(payload []byte) {
	n, err := strconv.ParseInt(strings.TrimSpace(string(payload)), 10, 64)
	if err != nil || n < 0 {
		return
	}
	d := &b.drops
	switch {
	case d.last < 0:
	case n >= d.last:
		b.metrics.brokerDropped.Add(float64(n - d.last))
	default:
		b.metrics.brokerDropped.Add(float64(n))
	}
	d.last = n
	d.dropped.Store(uint64(n))
}
