// Package status owns the /status document: what one agent reports about
// itself and its peers. The agent fills it; moha status, the status page
// and the benchmark read it.
package status

import (
	"github.com/moha-project/moha/internal/buildinfo"
	"github.com/moha-project/moha/internal/interest"
	"github.com/moha-project/moha/internal/mesh"
)

// Status is an agent's state as /status reports it.
type Status struct {
	Version        buildinfo.Info `json:"version"`
	Node           string         `json:"node"`
	Ready          bool           `json:"ready"`
	ReadyReason    string         `json:"ready_reason"`
	Degraded       bool           `json:"degraded"`
	DegradedReason string         `json:"degraded_reason,omitempty"`
	Broker         BrokerStatus   `json:"broker"`
	Data           DataStatus     `json:"data_session"`
	Interest       interest.Stats `json:"interest"`
	Advertised     []string       `json:"advertised"`
	Peers          []PeerStatus   `json:"peers"`
	ForwardQueue   int            `json:"forward_queue"`
	InboundPending int            `json:"inbound_pending"`
	Shared         SharedStatus   `json:"shared_subscriptions"`
	Replication    Replication    `json:"session_replication"`
	RetainedTopics int            `json:"retained_topics"` // topics the broker holds a retained message on, as the agent knows
	Uptime         string         `json:"uptime"`
	Runtime        RuntimeStatus  `json:"runtime"`
}

// SharedStatus shows how shared subscription groups are spread.
// Replication is what the agent does for persistent sessions surviving
// the loss of their node (docs/SESSIONS.md).
type Replication struct {
	Replicas   int `json:"replicas"`   // session_replicas: how many other nodes keep each session
	Replicated int `json:"replicated"` // persistent sessions held here whose replicas peers keep
	Kept       int `json:"kept"`       // replicas kept here for sessions held on other nodes
}

type SharedStatus struct {
	Mode string `json:"mode"` // spread or prefer_local
	// Memberships are the groups the agent's own share sessions are members
	// of on the local broker, one entry per membership (one per member node
	// elsewhere), sorted.
	Memberships []string `json:"memberships"`
	// EchoesPending: republished messages an own membership may still take back.
	EchoesPending int `json:"echoes_pending"`
}

// RuntimeStatus is how the Go runtime runs the agent: the settings moha
// tunes for a forwarding agent (see 'moha agent --help').
type RuntimeStatus struct {
	GOMAXPROCS int    `json:"gomaxprocs"`
	GODEBUG    string `json:"godebug"`
	// SchedPolicy is the Linux scheduling policy of the agent's threads
	// ('moha agent --sched'), as the kernel reports it.
	SchedPolicy string `json:"sched_policy"`
}

// BrokerStatus describes the sessions with the local broker.
type BrokerStatus struct {
	Address string `json:"address"`
	Up      bool   `json:"up"`
	Error   string `json:"error,omitempty"`
	// QueueOverflows counts the times the broker logged that it drops
	// messages queued for one of the agent's sessions (lost messages).
	QueueOverflows uint64 `json:"queue_overflows"`
	// DroppedMessages is the broker's own count of messages it dropped
	// for full queues, all clients together.
	DroppedMessages uint64 `json:"dropped_messages"`
}

// DataStatus describes the data session: what it subscribes to on the
// local broker follows the peers' interest.
type DataStatus struct {
	ClientID string `json:"client_id,omitempty"`
	Filters  int    `json:"filters"`
	// Current: every interest change seen so far is applied to the
	// session's subscriptions (messages matching it reach the agent).
	Current bool `json:"current"`
	// AggregatedWildcards are single-level wildcards subscribed in place of
	// dense sets of exact peer filters, AggregatedFilters the exact filters
	// they stand for (data_subscription interest). What they bring that no
	// peer wanted is counted in moha_unrouted_messages_total.
	AggregatedWildcards int `json:"aggregated_wildcards"`
	AggregatedFilters   int `json:"aggregated_filters"`
}

// PeerStatus is one peer as this agent sees it.
type PeerStatus struct {
	mesh.PeerStatus
	HTTP            string   `json:"http"` // the peer agent's HTTP address, as configured (moha status reads it)
	InterestFilters int      `json:"interest_filters"`
	Interest        []string `json:"interest,omitempty"`
}
