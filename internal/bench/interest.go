package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/poll"
)

// InterestOptions configure MeasureInterest: how an agent's memory and the
// propagation of interest to its peers grow with the number of distinct
// subscriptions on its node.
type InterestOptions struct {
	Subscriptions []int // distinct filters to create on node2, one run each (default 10000, 100000)
	Clients       int   // subscribing clients sharing them (default 10)
	PerPacket     int   // filters per SUBSCRIBE packet (default 1000)
	// Persistent: the clients connect with persistent sessions (clean
	// start 0, session expiry 1 h) and disconnect once subscribed, as a
	// fleet of devices does; their subscriptions stay, offline.
	Persistent  bool
	AgentBinary string   // the moha binary the agents run as
	AgentArgs   []string // extra arguments for both agents (e.g. --pprof)
	// SessionReplicas, when set, is the cluster's session_replicas.
	SessionReplicas *int
	// DataSubscription, when set, is the cluster's data_subscription
	// ("all" or "interest").
	DataSubscription string
	Dir              string // work directory (a temporary one when empty)
	Progress         io.Writer
}

// InterestRow is one run's figures.
type InterestRow struct {
	Subscriptions int           `json:"subscriptions"`
	Subscribe     time.Duration `json:"subscribe_ns"`   // first SUBSCRIBE to the last SUBACK
	Propagation   time.Duration `json:"propagation_ns"` // first SUBSCRIBE until the peer's agent knows them all and its data session holds them
	HolderRSS     int64         `json:"holder_rss_bytes"`
	HolderBase    int64         `json:"holder_rss_before_bytes"`
	PeerRSS       int64         `json:"peer_rss_bytes"`
	PeerBase      int64         `json:"peer_rss_before_bytes"`
	// HolderBrokerRSS is node2's broker's resident memory at the end (its
	// sessions and subscriptions): a figure for sizing.
	HolderBrokerRSS int64 `json:"holder_broker_rss_bytes"`
	// HolderDegraded is how long the subscribing agent was seen degraded
	// (advertising everything) while the peer learned the filters.
	HolderDegraded time.Duration `json:"holder_degraded_ns"`
	// PeerDataFilters is what the peer's data session subscribes on its
	// broker once it holds them all: "#" with data_subscription all; with
	// interest the filters, dense sets aggregated into wildcards.
	PeerDataFilters int `json:"peer_data_filters"`
}

// MeasureInterest starts a two-node moha cluster per run, subscribes N
// distinct filters on node2 and reports the time until node1's agent
// advertises them all for node2, and both agents' resident memory.
func MeasureInterest(ctx context.Context, o InterestOptions) ([]InterestRow, error) {
	if len(o.Subscriptions) == 0 {
		o.Subscriptions = []int{10000, 100000}
	}
	o.Clients = orDefault(o.Clients, 10)
	o.PerPacket = orDefault(o.PerPacket, 1000)
	if o.AgentBinary == "" {
		return nil, errors.New("bench: interest: no agent binary")
	}
	var rows []InterestRow
	for _, n := range o.Subscriptions {
		if n < 1 {
			return rows, fmt.Errorf("bench: interest: --subscriptions %d: want at least 1", n)
		}
		row, err := measureInterestOnce(ctx, o, n)
		if err != nil {
			return rows, err
		}
		rows = append(rows, row)
	}
	return rows, nil
}

func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

func measureInterestOnce(ctx context.Context, o InterestOptions, n int) (InterestRow, error) {
	row := InterestRow{Subscriptions: n}
	c, stop, err := startPair(ctx, "interest", o.Dir, launch.Options{AgentBinary: o.AgentBinary,
		AgentArgs: map[string][]string{"node1": o.AgentArgs, "node2": o.AgentArgs},
		Configure: func(c *config.Cluster) {
			if o.SessionReplicas != nil {
				c.SessionReplicas = o.SessionReplicas
			}
			if o.DataSubscription != "" {
				c.DataSubscription = o.DataSubscription
			}
		}})
	if err != nil {
		return row, err
	}
	defer stop()
	holder, peer := c.Config.Nodes[1], c.Config.Nodes[0]
	row.HolderBase = rss(c.AgentProcess(holder.Name).Pid())
	row.PeerBase = rss(c.AgentProcess(peer.Name).Pid())
	progressf(o.Progress, "interest: subscribing %d filters on %s", n, holder.Name)

	start := time.Now()
	var clients []*paho.Client
	for k := range o.Clients {
		ep := endpoint{ClientID: "moha-bench-interest-" + strconv.Itoa(k), Address: holder.Broker.Address}
		cl, err := connectInterestClient(ctx, ep, o.Persistent)
		if err != nil {
			return row, err
		}
		defer func() { _ = cl.Disconnect(&paho.Disconnect{}) }()
		clients = append(clients, cl)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(clients))
	for k, cl := range clients {
		wg.Go(func() {
			errs[k] = subscribeShare(ctx, cl, k, o.Clients, n, o.PerPacket)
			if o.Persistent && errs[k] == nil {
				errs[k] = cl.Disconnect(&paho.Disconnect{})
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return row, err
	}
	row.Subscribe = time.Since(start)
	if err := waitPropagated(ctx, &row, holder, peer, n); err != nil {
		return row, err
	}
	row.Propagation = time.Since(start)
	row.HolderRSS = rss(c.AgentProcess(holder.Name).Pid())
	row.PeerRSS = rss(c.AgentProcess(peer.Name).Pid())
	row.HolderBrokerRSS = rss(c.Broker(holder.Name).Pid())
	progressf(o.Progress, "interest: %d filters known to %s after %v", n, peer.Name, row.Propagation.Round(time.Millisecond))
	return row, nil
}

// statusPoll is how often the propagation wait reads both agents' status.
const statusPoll = 100 * time.Millisecond

// waitPropagated waits until peer's router knows holder's n filters and its
// data session holds them. The holder may turn degraded meanwhile (a count
// published ahead of the log lines still queued for it): that time is
// recorded. A holder degraded whose table did not change for stuckAfter
// lost lines for good, which fails the run: Mosquitto's log lines expire
// after 20 s, so none can still be on its way then.
func waitPropagated(ctx context.Context, row *InterestRow, holder, peer config.Node, n int) error {
	const stuckAfter = 30 * time.Second
	lastCount, lastChange, prev := -1, time.Now(), time.Now()
	err := poll.Until(ctx, 5*time.Minute, statusPoll, func() (bool, error) {
		st, err := fetchStatus(ctx, peer.HTTP)
		// Known to the peer's router, and subscribed by its data session.
		if err == nil && len(st.Peers) > 0 && st.Peers[0].InterestFilters == n && st.Data.Current {
			row.PeerDataFilters = st.Data.Filters
			return true, nil
		}
		now := time.Now()
		defer func() { prev = now }()
		h, err := fetchStatus(ctx, holder.HTTP)
		if err != nil {
			return false, nil
		}
		if c := h.Interest.Subscriptions; c != lastCount {
			lastCount, lastChange = c, now
		}
		if !h.Degraded {
			return false, nil
		}
		row.HolderDegraded += now.Sub(prev)
		if now.Sub(lastChange) > stuckAfter {
			return false, fmt.Errorf("bench: interest: %s degraded after %d subscriptions: %s", holder.Name, n, h.DegradedReason)
		}
		return false, nil
	})
	if errors.Is(err, poll.ErrTimeout) {
		return fmt.Errorf("bench: interest: %s did not learn %d filters of %s within 5 min", peer.Name, n, holder.Name)
	}
	return err
}

// connectInterestClient connects one subscribing client; persistent ones
// keep their session for an hour after they disconnect.
func connectInterestClient(ctx context.Context, ep endpoint, persistent bool) (*paho.Client, error) {
	if !persistent {
		return connectClient(ctx, ep, paho.ClientConfig{}, 100)
	}
	dialer := net.Dialer{Timeout: dialTimeout}
	conn, err := dialer.DialContext(ctx, "tcp", ep.Address)
	if err != nil {
		return nil, fmt.Errorf("dial %s for %s: %w", ep.Address, ep.ClientID, err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	expiry := uint32(3600)
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: ep.ClientID, KeepAlive: keepAlive, Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}}); err != nil {
		return nil, fmt.Errorf("connect %s to %s: %w", ep.ClientID, ep.Address, err)
	}
	return c, nil
}

// subscribeShare subscribes client k's share of the n filters
// devices/<i>/cmd (a fleet: one command topic per device), per packets of
// perPacket filters.
func subscribeShare(ctx context.Context, cl *paho.Client, k, clients, n, perPacket int) error {
	var subs []paho.SubscribeOptions
	flush := func() error {
		if len(subs) == 0 {
			return nil
		}
		_, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: subs})
		subs = subs[:0]
		if err != nil {
			return fmt.Errorf("bench: interest: subscribe: %w", err)
		}
		return nil
	}
	for i := k; i < n; i += clients {
		subs = append(subs, paho.SubscribeOptions{Topic: "devices/" + strconv.Itoa(i) + "/cmd", QoS: 0})
		if len(subs) == perPacket {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// startPair starts a two-node cluster (real brokers, agents as child
// processes of opt.AgentBinary, no HAProxy) in a fresh directory under
// parent, and waits until both agents are settled. stop closes it and
// removes the directory.
func startPair(ctx context.Context, what, parent string, opt launch.Options) (c *launch.Cluster, stop func(), err error) {
	dir, err := os.MkdirTemp(parent, "moha-"+what+"-")
	if err != nil {
		return nil, nil, fmt.Errorf("bench: %s: %w", what, err)
	}
	opt.Nodes, opt.LBPort, opt.Dir, opt.Logger = 2, -1, dir, slog.New(slog.DiscardHandler)
	c, err = launch.Up(ctx, opt)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	stop = func() { c.Close(); os.RemoveAll(dir) }
	if err := waitSettledAgents(ctx, []string{c.Config.Nodes[0].HTTP, c.Config.Nodes[1].HTTP}); err != nil {
		stop()
		return nil, nil, err
	}
	return c, stop, nil
}

// waitSettledAgents waits until every agent is ready and not degraded, all
// of them within one 30 s limit.
func waitSettledAgents(ctx context.Context, https []string) error {
	settled := 0 // agents settled so far, in order: each is checked until it is
	err := poll.Until(ctx, 30*time.Second, 50*time.Millisecond, func() (bool, error) {
		for ; settled < len(https); settled++ {
			st, err := fetchStatus(ctx, https[settled])
			if err != nil || !st.Ready || st.Degraded {
				return false, nil
			}
		}
		return true, nil
	})
	if errors.Is(err, poll.ErrTimeout) {
		return fmt.Errorf("bench: interest: agent %s not settled", https[settled])
	}
	return err
}

// rss reads a process's resident set size from /proc (0 when unknown).
func rss(pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func progressf(w io.Writer, format string, args ...any) {
	if w != nil {
		fmt.Fprintf(w, format+"\n", args...)
	}
}

// WriteInterestTable prints the rows as a table.
func WriteInterestTable(w io.Writer, rows []InterestRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "subscriptions\tsubscribe\tpropagated to peer\tholder degraded\tholder agent RSS (before)\tpeer agent RSS (before)\tholder broker RSS\tpeer data filters\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%d\t%v\t%v\t%v\t%.1f MiB (%.1f)\t%.1f MiB (%.1f)\t%.1f MiB\t%d\t\n", r.Subscriptions,
			r.Subscribe.Round(time.Millisecond), r.Propagation.Round(time.Millisecond), r.HolderDegraded.Round(100*time.Millisecond),
			mib(r.HolderRSS), mib(r.HolderBase), mib(r.PeerRSS), mib(r.PeerBase), mib(r.HolderBrokerRSS), r.PeerDataFilters)
	}
	return tw.Flush()
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
