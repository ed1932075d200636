package mesh

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// metrics are the mesh's collectors; they exist (unregistered) even when
// the config has no Registerer, so the code never checks for nil.
type metrics struct {
	linkUp       *prometheus.GaugeVec
	connects     *prometheus.CounterVec
	rejected     *prometheus.CounterVec
	fwdMessages  *prometheus.CounterVec
	fwdBytes     *prometheus.CounterVec
	recvMessages *prometheus.CounterVec
	bytesRead    *prometheus.CounterVec
	queue        *prometheus.GaugeVec
	inflight     *prometheus.GaugeVec
	dropped      *prometheus.CounterVec
	ackFrames    *prometheus.CounterVec
	stalls       *prometheus.CounterVec
	brokerDown   *prometheus.GaugeVec
}

// newMetrics makes the link metrics, registered on reg unless it is nil.
func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	peer := []string{"peer"}
	return &metrics{
		linkUp: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moha_link_up", Help: "1 while the link to the peer is up.",
		}, peer),
		connects: f.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_link_connects_total", Help: "Links established with the peer.",
		}, peer),
		rejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_link_rejected_total", Help: "Connections refused during the handshake, by reason.",
		}, []string{"reason"}),
		fwdMessages: f.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_forward_messages_total", Help: "Messages written to the peer (resends included).",
		}, peer),
		fwdBytes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_forward_bytes_total", Help: "Bytes written on the link to the peer, all frames.",
		}, peer),
		recvMessages: f.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_received_messages_total", Help: "Messages received from the peer.",
		}, peer),
		bytesRead: f.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_link_bytes_read_total", Help: "Bytes read on the link from the peer, all frames.",
		}, peer),
		queue: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moha_peer_queue_messages", Help: "Messages queued for the peer, not yet sent.",
		}, peer),
		inflight: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moha_peer_inflight_messages", Help: "Messages sent to the peer and not yet acknowledged.",
		}, peer),
		dropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_peer_dropped_messages_total", Help: "Messages for the peer dropped, by reason.",
		}, []string{"peer", "reason"}),
		ackFrames: f.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_ack_frames_total", Help: "ACK frames written to the peer.",
		}, peer),
		stalls: f.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_peer_stalls_total", Help: "Times the peer's link was up but it acknowledged nothing for StallAfter (its broker hung): its messages were then buffered as for a peer that is down.",
		}, peer),
		brokerDown: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "moha_peer_broker_down", Help: "1 while the peer reports its broker sessions down: its messages are buffered as for a peer that is down.",
		}, peer),
	}
}

// Drop reasons for moha_peer_dropped_messages_total.
const (
	dropOverflow = "overflow" // peer down and its buffer full
	dropFull     = "full"     // link up, but the peer does not keep up: its buffer is full
	dropGone     = "gone"     // peer down past InterestGrace
	dropTooLarge = "too_large"
	dropShutdown = "shutdown" // still held when the mesh stopped
)

// peerMetrics are one peer's resolved children, so the hot path does no
// label lookups.
type peerMetrics struct {
	up, queue, inflight, brokerDown    prometheus.Gauge
	connects, fwdMessages, fwdBytes    prometheus.Counter
	recvMessages, bytesRead, ackFrames prometheus.Counter
	stalls                             prometheus.Counter
	dropped                            *prometheus.CounterVec
	name                               string
}

// dropReasons are every reason a peer's message may be dropped for.
var dropReasons = []string{dropOverflow, dropFull, dropGone, dropTooLarge, dropShutdown}

func (m *metrics) forPeer(name string) *peerMetrics {
	for _, r := range dropReasons {
		m.dropped.WithLabelValues(name, r) // every reason a series from the start, at 0
	}
	return &peerMetrics{
		up:           m.linkUp.WithLabelValues(name),
		queue:        m.queue.WithLabelValues(name),
		inflight:     m.inflight.WithLabelValues(name),
		connects:     m.connects.WithLabelValues(name),
		fwdMessages:  m.fwdMessages.WithLabelValues(name),
		fwdBytes:     m.fwdBytes.WithLabelValues(name),
		recvMessages: m.recvMessages.WithLabelValues(name),
		bytesRead:    m.bytesRead.WithLabelValues(name),
		ackFrames:    m.ackFrames.WithLabelValues(name),
		stalls:       m.stalls.WithLabelValues(name),
		brokerDown:   m.brokerDown.WithLabelValues(name),
		dropped:      m.dropped,
		name:         name,
	}
}

func (pm *peerMetrics) drop(reason string, n int) {
	pm.dropped.WithLabelValues(pm.name, reason).Add(float64(n))
}
