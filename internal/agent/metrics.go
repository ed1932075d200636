package agent

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/moha-project/moha/internal/forward"
	"github.com/moha-project/moha/internal/interest"
)

// metrics are the agent's own series; the mesh and the forwarder register
// theirs on the same registry.
type metrics struct {
	logErrors          prometheus.Counter
	brokerReconnects   prometheus.Counter
	inboundPublished   *prometheus.CounterVec
	inboundRejected    *prometheus.CounterVec
	inboundRetries     *prometheus.CounterVec
	invalidPeerFilters *prometheus.CounterVec
	takeovers          prometheus.Counter
	endedSessions      prometheus.Counter
	staleRetained      prometheus.Counter
	retainedSynced     *prometheus.CounterVec
	dataCopies         prometheus.Counter
	retainedRescans    prometheus.Counter
	drained            prometheus.Counter
	brokerQueueDrops   *prometheus.CounterVec
	securityEvents     *prometheus.CounterVec
	brokerDropped      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		logErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "moha_log_errors_total",
			Help: "Broker log lines the agent could not parse or apply (interest then over-stated).",
		}),
		brokerReconnects: f.NewCounter(prometheus.CounterOpts{
			Name: "moha_broker_session_losses_total",
			Help: "Times the agent lost its sessions with the local broker.",
		}),
		inboundPublished: f.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_inbound_messages_total",
			Help: "Messages from a peer that the local broker accepted.",
		}, []string{"peer"}),
		inboundRejected: f.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_inbound_rejected_total",
			Help: "Messages from a peer that the local broker refused for good (not authorized, topic invalid, too large, ...; or a transient refusal that persisted through every retry), dropped, by reason code.",
		}, []string{"peer", "reason"}),
		inboundRetries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_inbound_retries_total",
			Help: "Messages from a peer published again after the local broker refused them for a reason that may pass (0x80, 0x83, 0x97), by reason code.",
		}, []string{"peer", "reason"}),
		invalidPeerFilters: f.NewCounterVec(prometheus.CounterOpts{
			Name: "moha_peer_invalid_filters_total",
			Help: "Invalid topic filters a peer advertised (ignored).",
		}, []string{"peer"}),
	}
	m.takeovers = f.NewCounter(prometheus.CounterOpts{
		Name: "moha_takeovers_total",
		Help: "Local client connections closed because the same client id connected on another node.",
	})
	m.endedSessions = f.NewCounter(prometheus.CounterOpts{
		Name: "moha_ended_sessions_total",
		Help: "Offline local sessions ended because their client id connected with clean start on another node.",
	})
	m.staleRetained = f.NewCounter(prometheus.CounterOpts{
		Name: "moha_stale_retained_total",
		Help: "Retained writes from peers older than the value held here: delivered live, not stored (last writer wins).",
	})
	m.retainedSynced = f.NewCounterVec(prometheus.CounterOpts{
		Name: "moha_retained_synced_total",
		Help: "Retained messages sent to a peer that lacked them when its link started (anti-entropy).",
	}, []string{"peer"})
	m.dataCopies = f.NewCounter(prometheus.CounterOpts{
		Name: "moha_data_extra_copies_total",
		Help: "Extra copies of a message the broker sent the data session for overlapping filters, dropped.",
	})
	m.retainedRescans = f.NewCounter(prometheus.CounterOpts{
		Name: "moha_retained_rescans_total",
		Help: "Scans of the broker's retained messages after its retained count changed.",
	})
	m.drained = f.NewCounter(prometheus.CounterOpts{
		Name: "moha_drained_messages_total",
		Help: "Messages taken from a data session left by an earlier run (agent restart, broker reconnect) before it was ended.",
	})
	m.brokerQueueDrops = f.NewCounterVec(prometheus.CounterOpts{
		Name: "moha_broker_queue_overflows_total",
		Help: "Times the local broker logged that it drops messages queued for one of the agent's sessions (max_queued_messages reached): what it dropped is lost.",
	}, []string{"session"})
	m.brokerDropped = f.NewCounter(prometheus.CounterOpts{
		Name: "moha_broker_dropped_messages_total",
		Help: "Messages the local broker dropped for full queues, all its clients together ($SYS/broker/publish/messages/dropped).",
	})
	m.securityEvents = f.NewCounterVec(prometheus.CounterOpts{
		Name: "moha_security_events_total",
		Help: "Things only the agent should do, done by someone else and refused, by kind (unproven_marker: a marker without this run's token; status_refused: /status or /debug/pprof asked for from another host without the status token).",
	}, []string{"kind"})
	return m
}

// registerInterest exports the interest tables as gauges read at scrape time.
func (m *metrics) registerInterest(reg prometheus.Registerer, t *interest.Table, r *forward.Router) {
	f := promauto.With(reg)
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "moha_degraded",
		Help: "1 while the agent cannot be sure it knows every local subscription and advertises # instead.",
	}, func() float64 {
		if d, _ := t.Degraded(); d {
			return 1
		}
		return 0
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "moha_local_interest_filters",
		Help: "Distinct topic filters local clients hold.",
	}, func() float64 { return float64(t.Stats().Filters) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "moha_local_clients",
		Help: "Local client sessions the agent knows (connected or persistent offline).",
	}, func() float64 { return float64(t.Stats().Clients) })
	for _, p := range r.Peers() {
		f.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "moha_peer_interest_filters",
			Help:        "Distinct topic filters a peer advertises.",
			ConstLabels: prometheus.Labels{"peer": p},
		}, func() float64 { return float64(r.Filters(p)) })
	}
}
