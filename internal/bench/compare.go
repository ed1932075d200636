package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/launch"
	"github.com/moha-project/moha/internal/linkdefault"
	"github.com/moha-project/moha/internal/poll"
	"github.com/moha-project/moha/internal/status"
)

// Setup names accepted in CompareOptions.Setups.
const (
	SetupSingle = "single" // one Mosquitto
	SetupBridge = "bridge" // a star of Mosquitto joined by the native bridge, `topic # both 2`
	SetupMoha   = "moha"   // Mosquitto, each with a moha agent, the agents in a full mesh
)

// The number of nodes of the bridge and moha setups. Every node is a broker
// (and an agent) on this one machine: beyond five they mostly compete for
// its cores, which measures the machine rather than the setups.
const (
	DefaultNodes = 2
	MinNodes     = 2
	MaxNodes     = 5
)

// Setups lists the setup names in the order Compare runs them.
var Setups = []string{SetupSingle, SetupBridge, SetupMoha}

// ErrUnknownSetup is returned for a setup name not in Setups.
var ErrUnknownSetup = errors.New("bench: unknown setup")

const (
	defaultSetupTimeout = 30 * time.Second
	stopGrace           = 5 * time.Second
	statusPollInterval  = 50 * time.Millisecond
	statusTimeout       = 2 * time.Second
)

// CompareOptions describe one `moha bench compare`.
type CompareOptions struct {
	// Bench is the workload, the same for every setup; URLs,
	// SubscriberURLs, Isolated and BeforePublish are set per setup.
	Bench Options
	// Setups to run, a subset of Setups; empty means all.
	Setups []string
	// Nodes is the number of brokers of the bridge and moha setups, from
	// MinNodes to MaxNodes; 0 means DefaultNodes. The bridge is a star
	// (every other broker bridges to the first), moha a full mesh (one
	// link per pair of agents). Single stays one broker.
	Nodes int
	// MosquittoBinary is the broker to run; empty finds mosquitto.
	MosquittoBinary string
	// AgentBinary is the moha executable, run as `AgentBinary agent ...`
	// for the moha setup (a child process, so its CPU time is measured).
	AgentBinary string
	// AgentArgs are extra arguments for every agent (e.g. "--pprof").
	AgentArgs []string
	// SessionReplicas, when set, is the moha setup's session_replicas.
	SessionReplicas *int
	// LinkCompression, when set, is the moha setup's link_compression.
	LinkCompression string
	// Dir holds configs and logs; empty means a temporary directory that
	// is removed afterwards unless a setup failed.
	Dir string
	// Rounds runs the setups this many times, interleaved (single, bridge,
	// moha, single, bridge, moha, ...): on a noisy machine one round's
	// ratio moves with whatever else runs. The result is the round whose
	// moha/bridge delivered rate is the median, with every round's ratios.
	// 0 means 1.
	Rounds int
	// SetupTimeout bounds starting one setup and waiting until it is
	// settled (bridge connected, agents sure of their interest).
	SetupTimeout time.Duration
	// Progress receives a line per setup and phase; nil for none.
	Progress io.Writer

	// onStart, for tests, learns the processes of each setup once started.
	onStart func(setup string, pids []int)
}

// CompareResult is one row per setup, in the order they ran.
type CompareResult struct {
	Scenario string `json:"scenario"`
	// Nodes is the number of brokers of the bridge and moha setups.
	Nodes int          `json:"nodes"`
	Rows  []CompareRow `json:"rows"`
	// MohaVsBridge holds moha's figures divided by the bridge's, when
	// both ran.
	MohaVsBridge *CompareRatios `json:"moha_vs_bridge,omitempty"`
	// Round is which of Rounds the rows are from (1-based); Rounds holds
	// each round's moha/bridge ratios, in the order they ran, when more
	// than one round ran.
	Round  int             `json:"round,omitempty"`
	Rounds []CompareRatios `json:"rounds,omitempty"`
}

// CompareRow is what one setup measured. CPU times and bytes are the
// difference across the load run: from before the first client connects
// to after the last one disconnected.
type CompareRow struct {
	Setup  string  `json:"setup"`
	Result *Result `json:"result"`
	// InterNodeBytes counts both directions of all TCP traffic between
	// the nodes, framing and acknowledgements included; 0 for single.
	InterNodeBytes int64 `json:"inter_node_bytes"`
	// InterNodeBytesPerDelivered is InterNodeBytes per delivered message.
	InterNodeBytesPerDelivered float64 `json:"inter_node_bytes_per_delivered"`
	// Relays is the number of counting relays on the paths between the
	// nodes, Links the connections they carried at the end of the run:
	// bridge N-1 and N-1 (a star, a relay per spoke), moha N-1 and
	// N(N-1)/2 (a full mesh, a relay per dialled link listener); 0 for single.
	Relays    int           `json:"relays"`
	Links     int           `json:"links"`
	BrokerCPU time.Duration `json:"broker_cpu"` // user+system, all brokers
	AgentCPU  time.Duration `json:"agent_cpu"`  // user+system, all agents
	// Forwarded is the number of messages the agents sent to a peer.
	Forwarded int64 `json:"forwarded"`
	// AgentCPUPerMsg is AgentCPU in microseconds per Forwarded message.
	AgentCPUPerMsg float64 `json:"agent_cpu_per_msg_us"`
	// CPUPerDelivered is broker plus agent CPU in microseconds per
	// delivered message.
	CPUPerDelivered float64 `json:"cpu_per_delivered_us"`
	// Publishing is the same CPU accounting over the messages alone, from
	// the first publish to the last delivery: without the clients'
	// connections, subscriptions and disconnections, which the agents
	// follow too. Nil when the run ended before it could be read.
	Publishing *PhaseCPU `json:"publishing,omitempty"`
}

// PhaseCPU is the CPU the brokers and agents used over part of a run.
type PhaseCPU struct {
	BrokerCPU       time.Duration `json:"broker_cpu"`
	AgentCPU        time.Duration `json:"agent_cpu"`
	Forwarded       int64         `json:"forwarded"`
	AgentCPUPerMsg  float64       `json:"agent_cpu_per_msg_us"`
	CPUPerDelivered float64       `json:"cpu_per_delivered_us"`
}

// CompareRatios are moha's figures over the native bridge's; 0 where the
// bridge's figure is 0.
type CompareRatios struct {
	DeliveredRate      float64 `json:"delivered_rate"`
	CrossDeliveredRate float64 `json:"cross_delivered_rate"`
	InterNodeBytes     float64 `json:"inter_node_bytes"`
	CPU                float64 `json:"cpu"` // brokers plus agents
	// CPUPublishing is CPU over the messages alone (CompareRow.Publishing).
	CPUPublishing float64 `json:"cpu_publishing"`
	LatencyP50    float64 `json:"latency_p50"`
	LatencyP99    float64 `json:"latency_p99"`
}

// Compare runs the same workload against each setup in turn, on this
// machine: every broker, agent and relay is started for its setup and
// stopped before the next one starts. It returns the rows measured so far
// with the error of a setup that failed.
func Compare(ctx context.Context, o CompareOptions) (_ *CompareResult, err error) {
	if err := o.fill(); err != nil {
		return nil, err
	}
	dir, removeDir, err := o.workDir()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err == nil {
			removeDir()
		} else {
			err = fmt.Errorf("%w (logs in %s)", err, dir)
		}
	}()
	if o.Rounds <= 1 {
		return o.runRound(ctx, dir)
	}
	var rounds []*CompareResult
	for i := range o.Rounds {
		o.progressf("all", "round %d of %d", i+1, o.Rounds)
		res, err := o.runRound(ctx, filepath.Join(dir, fmt.Sprintf("round%d", i+1)))
		if err != nil {
			return res, fmt.Errorf("round %d: %w", i+1, err)
		}
		rounds = append(rounds, res)
	}
	return medianRound(rounds), nil
}

// runRound runs every setup once, in order, with its files under dir.
func (o *CompareOptions) runRound(ctx context.Context, dir string) (*CompareResult, error) {
	res := &CompareResult{Scenario: o.Bench.Scenario, Nodes: o.Nodes}
	for _, name := range o.Setups {
		row, err := o.runSetup(ctx, name, filepath.Join(dir, name))
		if row.Result != nil {
			res.Rows = append(res.Rows, row)
		}
		if err != nil {
			return res, fmt.Errorf("setup %s: %w", name, err)
		}
	}
	res.MohaVsBridge = res.ratios()
	return res, nil
}

// medianRound returns the round whose moha/bridge delivered rate is the
// median (the lower middle one of an even count), carrying every round's
// ratios; the first round when moha and the bridge did not both run.
func medianRound(rounds []*CompareResult) *CompareResult {
	pick := 0
	var all []CompareRatios
	if rounds[0].MohaVsBridge != nil {
		order := make([]int, len(rounds))
		for i, r := range rounds {
			order[i] = i
			all = append(all, *r.MohaVsBridge)
		}
		slices.SortStableFunc(order, func(a, b int) int {
			return cmp.Compare(all[a].DeliveredRate, all[b].DeliveredRate)
		})
		pick = order[(len(order)-1)/2]
	}
	res := rounds[pick]
	res.Round, res.Rounds = pick+1, all
	return res
}

// fill checks the options and fills the defaults.
func (o *CompareOptions) fill() error {
	probe := o.Bench
	probe.URLs = []string{"127.0.0.1:1"} // set per setup
	probe.SubscriberURLs = nil
	if err := probe.Validate(); err != nil {
		return err
	}
	if o.Nodes == 0 {
		o.Nodes = DefaultNodes
	}
	if err := CheckNodes(o.Nodes); err != nil {
		return err
	}
	if len(o.Setups) == 0 {
		o.Setups = slices.Clone(Setups)
	}
	for i, s := range o.Setups {
		if !slices.Contains(Setups, s) {
			return fmt.Errorf("%w %q (known: %s)", ErrUnknownSetup, s, strings.Join(Setups, ", "))
		}
		if slices.Contains(o.Setups[:i], s) {
			// Each setup has one directory: a second run would find the
			// first one's broker state there.
			return fmt.Errorf("%w: setup %q listed twice", ErrInvalidOptions, s)
		}
		if s == SetupMoha && o.AgentBinary == "" {
			return fmt.Errorf("%w: the moha setup needs AgentBinary", ErrInvalidOptions)
		}
	}
	if o.MosquittoBinary == "" {
		bin, err := launch.FindBinary("mosquitto")
		if err != nil {
			return err
		}
		o.MosquittoBinary = bin
	}
	if o.SetupTimeout <= 0 {
		o.SetupTimeout = defaultSetupTimeout
	}
	return nil
}

// CheckNodes reports, wrapped in ErrInvalidOptions, a node count outside
// MinNodes..MaxNodes.
func CheckNodes(n int) error {
	if n < MinNodes || n > MaxNodes {
		return fmt.Errorf("%w: %d nodes, want %d to %d", ErrInvalidOptions, n, MinNodes, MaxNodes)
	}
	return nil
}

func (o *CompareOptions) workDir() (dir string, remove func(), err error) {
	if o.Dir != "" {
		if err := os.MkdirAll(o.Dir, 0o755); err != nil {
			return "", nil, fmt.Errorf("compare dir: %w", err)
		}
		return o.Dir, func() {}, nil
	}
	dir, err = os.MkdirTemp("", "moha-compare-")
	if err != nil {
		return "", nil, fmt.Errorf("compare dir: %w", err)
	}
	return dir, func() { _ = os.RemoveAll(dir) }, nil
}

func (o *CompareOptions) progressf(setup, format string, args ...any) {
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "compare [%s] %s\n", setup, fmt.Sprintf(format, args...))
	}
}

// runSetup starts one setup, runs the workload against it, and stops it.
func (o *CompareOptions) runSetup(ctx context.Context, name, dir string) (CompareRow, error) {
	row := CompareRow{Setup: name}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return row, fmt.Errorf("setup dir: %w", err)
	}
	o.progressf(name, "starting")
	s, err := o.start(ctx, name, dir)
	if err != nil {
		return row, err
	}
	row.Relays = len(s.relays)
	defer func() {
		o.progressf(name, "stopping")
		s.close()
	}()
	if o.onStart != nil {
		o.onStart(name, s.pids())
	}
	w := o.Bench
	w.URLs, w.SubscriberURLs, w.Isolated = s.urls, nil, false
	var want map[string]int
	if s.waitInterest != nil {
		if want, err = filtersPerAddress(w); err != nil {
			return row, err
		}
		if w.Persistent && o.replicas() > 0 {
			if s.sessions, err = subscribersPerAddress(w); err != nil {
				return row, err
			}
			s.replicas = min(o.replicas(), len(s.nodes)-1)
		}
	}
	window := &publishWindow{setup: s}
	w.BeforePublish = func(ctx context.Context) error {
		if s.waitInterest != nil {
			o.progressf(name, "clients subscribed; waiting until every agent knows its peers' interest")
			if err := s.waitInterest(ctx, want, o.SetupTimeout); err != nil {
				return err
			}
		}
		return window.open(ctx)
	}
	w.AfterDrain = window.close
	before, err := s.counters(ctx)
	if err != nil {
		return row, err
	}
	o.progressf(name, "running %s: %d publishers x %d messages, %d subscribers on %s",
		w.Scenario, w.Publishers, w.Messages, w.Subscribers, strings.Join(w.URLs, ", "))
	res, runErr := Run(ctx, w)
	// The processes are still up after a cancelled run: read what they used.
	after, err := s.counters(context.WithoutCancel(ctx))
	row.Result = res
	if err == nil {
		row.measure(before, after)
	}
	if res != nil {
		row.Publishing = window.cpu(res)
		o.progressf(name, "delivered %d/%d in %s", res.Delivered, res.Expected, res.Duration.Round(time.Millisecond))
	}
	return row, errors.Join(runErr, err)
}

func (r *CompareRow) measure(before, after counters) {
	r.InterNodeBytes = after.bytes - before.bytes
	r.Links = after.links
	r.BrokerCPU = after.brokerCPU - before.brokerCPU
	r.AgentCPU = after.agentCPU - before.agentCPU
	r.Forwarded = after.forwarded - before.forwarded
	if r.Forwarded > 0 {
		r.AgentCPUPerMsg = micros(r.AgentCPU) / float64(r.Forwarded)
	}
	if r.Result != nil && r.Result.Delivered > 0 {
		r.CPUPerDelivered = micros(r.BrokerCPU+r.AgentCPU) / float64(r.Result.Delivered)
		r.InterNodeBytesPerDelivered = float64(r.InterNodeBytes) / float64(r.Result.Delivered)
	}
}

// publishWindow reads a setup's counters at the first publish and at the
// last delivery, to know what the messages alone cost.
type publishWindow struct {
	setup      *setup
	start, end counters
	closed     bool // end holds a reading
}

func (p *publishWindow) open(ctx context.Context) error {
	var err error
	p.start, err = p.setup.counters(ctx)
	return err
}

func (p *publishWindow) close(ctx context.Context) {
	var err error
	// A cancelled run leaves the processes up: read what they used.
	p.end, err = p.setup.counters(context.WithoutCancel(ctx))
	p.closed = err == nil
}

// cpu is what the processes used inside the window, and per message; nil
// when the run ended before the window closed.
func (p *publishWindow) cpu(res *Result) *PhaseCPU {
	if !p.closed {
		return nil
	}
	start, end := p.start, p.end
	c := &PhaseCPU{
		BrokerCPU: end.brokerCPU - start.brokerCPU,
		AgentCPU:  end.agentCPU - start.agentCPU,
		Forwarded: end.forwarded - start.forwarded,
	}
	if c.Forwarded > 0 {
		c.AgentCPUPerMsg = micros(c.AgentCPU) / float64(c.Forwarded)
	}
	if res.Delivered > 0 {
		c.CPUPerDelivered = micros(c.BrokerCPU+c.AgentCPU) / float64(res.Delivered)
	}
	return c
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// filtersPerAddress counts the distinct filters the workload's
// subscribers hold on each address: what each agent must advertise.
func subscribersPerAddress(o Options) (map[string]int, error) {
	p, err := buildPlan(o, "")
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for _, s := range p.Subscribers {
		counts[s.Address]++
	}
	return counts, nil
}

// replicas is the moha setup's session_replicas.
func (o *CompareOptions) replicas() int {
	if o.SessionReplicas != nil {
		return *o.SessionReplicas
	}
	return config.DefaultSessionReplicas
}

func filtersPerAddress(o Options) (map[string]int, error) {
	p, err := buildPlan(o, "")
	if err != nil {
		return nil, err
	}
	sets := map[string]map[string]bool{}
	for _, s := range p.Subscribers {
		if sets[s.Address] == nil {
			sets[s.Address] = map[string]bool{}
		}
		sets[s.Address][s.Topic] = true
	}
	counts := map[string]int{}
	for addr, set := range sets {
		counts[addr] = len(set)
	}
	return counts, nil
}

// setup is one running arrangement of brokers (and agents).
type setup struct {
	urls    []string // one per node; single repeats its broker
	brokers []*launch.Process
	agents  []*launch.Process
	relays  []*Relay // on the inter-node paths; none for single
	nodes   []mohaNode
	// waitInterest, for moha, waits until each agent advertises want[its
	// broker address] filters to its peer.
	waitInterest func(ctx context.Context, want map[string]int, timeout time.Duration) error
	// sessions, for moha with persistent subscribers and session replicas,
	// is the number of subscribers per broker address: each node must have
	// announced that many sessions (their replicas add their filters to
	// the interest of the nodes keeping them).
	sessions map[string]int
	// replicas is how many other nodes keep a replica of each of them.
	replicas int
	closers  []func() // run in reverse order
}

// mohaNode is what the moha setup needs of a node.
type mohaNode struct {
	name, broker, http string
}

func (s *setup) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

func (s *setup) pids() []int {
	var pids []int
	for _, p := range slices.Concat(s.brokers, s.agents) {
		pids = append(pids, p.Pid())
	}
	return pids
}

// counters is what the setup has used so far.
type counters struct {
	bytes               int64
	links               int // connections through the relays right now
	brokerCPU, agentCPU time.Duration
	forwarded           int64
}

func (s *setup) counters(ctx context.Context) (counters, error) {
	var c counters
	for _, r := range s.relays {
		to, from := r.Bytes()
		c.bytes += to + from
		c.links += r.Open()
	}
	for _, p := range s.brokers {
		c.brokerCPU += p.CPUTime()
	}
	for _, p := range s.agents {
		c.agentCPU += p.CPUTime()
	}
	for _, n := range s.nodes {
		st, err := fetchStatus(ctx, n.http)
		if err != nil {
			return c, err
		}
		for _, p := range st.Peers {
			c.forwarded += int64(p.SentMessages)
		}
	}
	return c, nil
}

func (o *CompareOptions) start(ctx context.Context, name, dir string) (*setup, error) {
	ctx, cancel := context.WithTimeout(ctx, o.SetupTimeout)
	defer cancel()
	switch name {
	case SetupSingle:
		return o.startSingle(ctx, dir)
	case SetupBridge:
		return o.startBridge(ctx, dir)
	default:
		return o.startMoha(ctx, dir)
	}
}

// startSingle starts one broker; every endpoint is its address, so the
// clients are spread exactly as in the setups with o.Nodes brokers.
func (o *CompareOptions) startSingle(ctx context.Context, dir string) (*setup, error) {
	p, addr, err := startBroker(ctx, o.MosquittoBinary, dir, "mosquitto", nil)
	if err != nil {
		return nil, err
	}
	s := &setup{urls: slices.Repeat([]string{addr}, o.Nodes), brokers: []*launch.Process{p}}
	s.closers = append(s.closers, func() { p.Stop(stopGrace) })
	return s, nil
}

// startBridge starts a star, the way Mosquitto users join more than two
// brokers: the hub (mosquitto-a) and o.Nodes-1 spokes whose native bridge
// dials the hub, each through a relay of its own. It returns once
// messages cross every bridge both ways.
func (o *CompareOptions) startBridge(ctx context.Context, dir string) (_ *setup, err error) {
	s := &setup{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	hub, hubAddr, err := startBroker(ctx, o.MosquittoBinary, dir, brokerName(0), nil)
	if err != nil {
		return nil, err
	}
	s.brokers = append(s.brokers, hub)
	s.closers = append(s.closers, func() { hub.Stop(stopGrace) })
	s.urls = []string{hubAddr}
	for i := 1; i < o.Nodes; i++ {
		if err := o.startSpoke(ctx, s, dir, i, hubAddr); err != nil {
			return nil, err
		}
	}
	o.progressf(SetupBridge, "waiting until every bridge carries messages both ways")
	if err := waitBridge(ctx, hubAddr, s.urls[1:], o.SetupTimeout); err != nil {
		return nil, err
	}
	return s, nil
}

// startSpoke starts the relay in front of the hub for spoke i and the
// spoke, whose bridge dials that relay, adding both to s.
func (o *CompareOptions) startSpoke(ctx context.Context, s *setup, dir string, i int, hubAddr string) error {
	relay, err := NewRelay("127.0.0.1:0", hubAddr)
	if err != nil {
		return err
	}
	s.relays = append(s.relays, relay)
	s.closers = append(s.closers, func() { _ = relay.Close() })
	name := brokerName(i)
	p, addr, err := startBroker(ctx, o.MosquittoBinary, dir, name, bridgeSection("bridge-"+name, relay.Addr()))
	if err != nil {
		return err
	}
	s.brokers = append(s.brokers, p)
	// Closers run in reverse: the spoke (the bridge's client side) stops
	// before its relay and the hub, so the bridge does not spend the
	// shutdown reconnecting.
	s.closers = append(s.closers, func() { p.Stop(stopGrace) })
	s.urls = append(s.urls, addr)
	return nil
}

// brokerName names the bridge setup's broker i: mosquitto-a (the hub),
// mosquitto-b, ...
func brokerName(i int) string { return "mosquitto-" + string(rune('a'+i)) }

// startMoha starts o.Nodes brokers with their agents as child processes,
// the agents linked in a full mesh. Every link passes through one relay
// (see relayLinks).
func (o *CompareOptions) startMoha(ctx context.Context, dir string) (_ *setup, err error) {
	s := &setup{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	var relayErr error
	agentArgs := map[string][]string{}
	opt := launch.Options{
		Nodes: o.Nodes, LBPort: -1, Dir: dir,
		AgentBinary: o.AgentBinary, AgentArgs: agentArgs,
		Logger: slog.New(slog.DiscardHandler),
		Configure: func(c *config.Cluster) {
			if o.SessionReplicas != nil {
				c.SessionReplicas = o.SessionReplicas
			}
			if o.LinkCompression != "" {
				c.LinkCompression = o.LinkCompression
			}
			if relayErr = s.relayLinks(c, o.AgentArgs, agentArgs); relayErr != nil {
				c.Nodes = nil // fails validation: nothing to measure without the relays
			}
		},
	}
	c, err := launch.Up(ctx, opt)
	for _, relay := range s.relays {
		s.closers = append(s.closers, func() { _ = relay.Close() })
	}
	if err != nil {
		return nil, errors.Join(relayErr, err)
	}
	s.closers = append(s.closers, func() { _ = c.Close() })
	for _, n := range c.Config.Nodes {
		s.brokers = append(s.brokers, c.Broker(n.Name))
		s.agents = append(s.agents, c.AgentProcess(n.Name))
		s.urls = append(s.urls, n.Broker.Address)
		s.nodes = append(s.nodes, mohaNode{name: n.Name, broker: n.Broker.Address, http: n.HTTP})
		o.progressf(SetupMoha, "%s: broker %s, agent http://%s/status (log %s)",
			n.Name, n.Broker.Address, n.HTTP, c.AgentProcess(n.Name).LogPath)
	}
	s.waitInterest = s.waitAdvertised
	o.progressf(SetupMoha, "waiting until every agent is ready, linked and sure of its interest")
	if err := s.waitAdvertised(ctx, nil, o.SetupTimeout); err != nil {
		return nil, err
	}
	return s, nil
}

// relayLinks puts a relay in front of the link listener of every node that
// a peer dials (of each pair, the node linkdefault.Dials says opens the link): the
// node's cluster address in the description becomes the relay's, and its
// agent is told to listen on the real one. The peers dial what the
// description says, so every link passes through exactly one relay, and
// one relay carries all the links dialled to its node. args gets every
// node's agent arguments: extra, plus --listen where a relay stands.
func (s *setup) relayLinks(c *config.Cluster, extra []string, args map[string][]string) error {
	for i := range c.Nodes {
		n := &c.Nodes[i]
		args[n.Name] = slices.Clone(extra)
		if !dialled(c.Nodes, n.Name) {
			continue
		}
		real := n.Link // distinct from every other planned port
		relay, err := NewRelay("127.0.0.1:0", real)
		if err != nil {
			return err
		}
		s.relays = append(s.relays, relay)
		n.Link = relay.Addr()
		args[n.Name] = append(args[n.Name], "--listen", real)
	}
	return nil
}

// dialled reports whether some other node dials name's link listener.
func dialled(nodes []config.Node, name string) bool {
	return slices.ContainsFunc(nodes, func(n config.Node) bool { return linkdefault.Dials(n.Name, name) })
}

// waitAdvertised polls every agent's /status until it is ready, not
// degraded, its peers are up, and each peer advertises want[peer's broker
// address] filters (any number when want is nil).
func (s *setup) waitAdvertised(ctx context.Context, want map[string]int, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	brokerOf := map[string]string{}
	for _, n := range s.nodes {
		brokerOf[n.name] = n.broker
	}
	var why string
	// The timeout is on ctx, not on poll.Until: the status requests end with it too.
	err := poll.Until(ctx, 0, statusPollInterval, func() (bool, error) {
		kept := 0
		for _, n := range s.nodes {
			var st status.Status
			if st, why = s.unsettled(ctx, n, want, brokerOf); why != "" {
				return false, nil
			}
			kept += st.Replication.Kept
		}
		if want != nil && s.sessions != nil {
			why = s.unreplicated(kept)
		}
		return why == "", nil
	})
	if err != nil {
		return fmt.Errorf("moha agents not settled: %s: %w", why, err)
	}
	return nil
}

// unsettled says why node n is not settled yet, "" when it is, with the
// node's status.
func (s *setup) unsettled(ctx context.Context, n mohaNode, want map[string]int, brokerOf map[string]string) (status.Status, string) {
	st, err := fetchStatus(ctx, n.http)
	switch {
	case err != nil:
		return st, err.Error()
	case !st.Ready:
		return st, n.name + " not ready: " + st.ReadyReason
	case st.Degraded:
		return st, n.name + " degraded: " + st.DegradedReason
	case !st.Data.Current:
		return st, n.name + "'s data session is still following its peers' interest"
	case len(st.Peers) != len(s.nodes)-1:
		return st, fmt.Sprintf("%s knows %d peers", n.name, len(st.Peers))
	}
	for _, p := range st.Peers {
		if !p.Up {
			return st, fmt.Sprintf("%s: link to %s down", n.name, p.Name)
		}
		w := want[brokerOf[p.Name]]
		if want != nil && (p.InterestFilters < w || p.InterestFilters != w && s.sessions == nil) {
			return st, fmt.Sprintf("%s sees %d filters of %s, want %d", n.name, p.InterestFilters, p.Name, w)
		}
	}
	if want != nil && s.sessions != nil && st.Replication.Replicated != s.sessions[n.broker] {
		return st, fmt.Sprintf("%s replicates %d sessions, want %d", n.name, st.Replication.Replicated, s.sessions[n.broker])
	}
	return st, ""
}

// unreplicated says why the replicas the nodes keep, kept in all, are not
// complete yet, "" when they are. Which nodes keep a session's replicas
// depends on its client id (placement), which the run chooses: only the
// total is known here, every session on s.replicas other nodes.
func (s *setup) unreplicated(kept int) string {
	total := 0
	for _, k := range s.sessions {
		total += k
	}
	if want := total * s.replicas; kept != want {
		return fmt.Sprintf("the nodes keep %d session replicas, want %d", kept, want)
	}
	return ""
}

// fetchStatus reads an agent's /status.
func fetchStatus(ctx context.Context, httpAddr string) (status.Status, error) {
	var st status.Status
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/status", nil)
	if err != nil {
		return st, fmt.Errorf("agent status: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, fmt.Errorf("agent status: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("agent status %s: %s", httpAddr, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("agent status %s: %w", httpAddr, err)
	}
	return st, nil
}

// row returns the row of setup name, nil when it did not run.
func (c *CompareResult) row(name string) *CompareRow {
	for i := range c.Rows {
		if c.Rows[i].Setup == name && c.Rows[i].Result != nil {
			return &c.Rows[i]
		}
	}
	return nil
}

func (c *CompareResult) ratios() *CompareRatios {
	m, b := c.row(SetupMoha), c.row(SetupBridge)
	if m == nil || b == nil {
		return nil
	}
	over := func(f func(*CompareRow) float64) float64 { return ratio(f(m), f(b)) }
	return &CompareRatios{
		DeliveredRate:      over(deliveredRate),
		CrossDeliveredRate: over(crossDeliveredRate),
		InterNodeBytes:     over(interNodeBytes),
		CPU:                over(totalCPU),
		CPUPublishing:      over(publishingCPU),
		LatencyP50:         over(latencyP50),
		LatencyP99:         over(latencyP99),
	}
}

// ratio is a/b, 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// tableLine is one line of the comparison table: a value per setup and,
// when figure is set, moha's figure over the bridge's.
type tableLine struct {
	label  string
	value  func(*CompareRow) string
	figure func(*CompareRow) float64
}

func deliveredRate(r *CompareRow) float64      { return r.Result.DeliveredRate }
func crossDeliveredRate(r *CompareRow) float64 { return r.Result.CrossDeliveredRate }
func latencyP50(r *CompareRow) float64         { return float64(r.Result.LatencyP50) }
func latencyP99(r *CompareRow) float64         { return float64(r.Result.LatencyP99) }
func interNodeBytes(r *CompareRow) float64     { return float64(r.InterNodeBytes) }
func totalCPU(r *CompareRow) float64           { return float64(r.BrokerCPU + r.AgentCPU) }
func bytesPerDelivered(r *CompareRow) float64  { return r.InterNodeBytesPerDelivered }

func publishingCPU(r *CompareRow) float64 {
	if r.Publishing == nil {
		return 0
	}
	return float64(r.Publishing.BrokerCPU + r.Publishing.AgentCPU)
}

var compareLines = []tableLine{
	{"delivered / expected", func(r *CompareRow) string { return fmt.Sprintf("%d / %d", r.Result.Delivered, r.Result.Expected) }, nil},
	{"lost", func(r *CompareRow) string { return fmt.Sprint(r.Result.Lost) }, nil},
	{"duplicated", func(r *CompareRow) string { return fmt.Sprint(r.Result.Duplicated) }, nil},
	{"out of order", func(r *CompareRow) string { return fmt.Sprint(r.Result.OutOfOrder) }, nil},
	{"publish errors", func(r *CompareRow) string { return fmt.Sprint(r.Result.PublishErrors) }, nil},
	{"delivered rate (msg/s)", func(r *CompareRow) string { return fmt.Sprintf("%.0f", r.Result.DeliveredRate) }, deliveredRate},
	{"cross-node delivered ¹", func(r *CompareRow) string { return fmt.Sprint(r.Result.CrossDelivered) }, nil},
	{"cross-node rate (msg/s) ¹", func(r *CompareRow) string { return fmt.Sprintf("%.0f", r.Result.CrossDeliveredRate) }, crossDeliveredRate},
	{"publish rate (msg/s)", func(r *CompareRow) string { return fmt.Sprintf("%.0f", r.Result.PublishRate) }, nil},
	{"duration", func(r *CompareRow) string { return r.Result.Duration.Round(time.Millisecond).String() }, nil},
	{"latency p50", func(r *CompareRow) string { return roundLatency(r.Result.LatencyP50).String() }, latencyP50},
	{"latency p99", func(r *CompareRow) string { return roundLatency(r.Result.LatencyP99).String() }, latencyP99},
	{"bytes between brokers ²", func(r *CompareRow) string { return groupDigits(r.InterNodeBytes) }, interNodeBytes},
	{"  per published msg", func(r *CompareRow) string {
		return fmt.Sprintf("%.1f", ratio(float64(r.InterNodeBytes), float64(r.Result.Published)))
	}, nil},
	{"  per delivered msg", func(r *CompareRow) string {
		return fmt.Sprintf("%.1f", r.InterNodeBytesPerDelivered)
	}, bytesPerDelivered},
	{"relays / links between brokers ²", func(r *CompareRow) string { return fmt.Sprintf("%d / %d", r.Relays, r.Links) }, nil},
	{"broker CPU (s) ³", func(r *CompareRow) string { return fmt.Sprintf("%.2f", r.BrokerCPU.Seconds()) }, nil},
	{"agent CPU (s) ³", func(r *CompareRow) string { return fmt.Sprintf("%.2f", r.AgentCPU.Seconds()) }, nil},
	{"CPU per delivered msg (µs) ³", func(r *CompareRow) string { return fmt.Sprintf("%.1f", r.CPUPerDelivered) }, totalCPU},
	{"agent forwarded msgs ⁴", func(r *CompareRow) string { return fmt.Sprint(r.Forwarded) }, nil},
	{"agent CPU per fwd msg (µs) ⁴", func(r *CompareRow) string {
		if r.Forwarded == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", r.AgentCPUPerMsg)
	}, nil},
	{"CPU per delivered msg, publishing (µs) ⁵", func(r *CompareRow) string {
		if r.Publishing == nil {
			return "-"
		}
		return fmt.Sprintf("%.1f", r.Publishing.CPUPerDelivered)
	}, publishingCPU},
	{"agent CPU per fwd msg, publishing (µs) ⁵", func(r *CompareRow) string {
		if r.Publishing == nil || r.Publishing.Forwarded == 0 {
			return "-"
		}
		return fmt.Sprintf("%.1f", r.Publishing.AgentCPUPerMsg)
	}, nil},
}

const compareFootnotes = `¹ deliveries to a subscriber on another broker than its publisher's (none in single:
  every endpoint is the one broker); rate = those over first publish to last such delivery.
² both directions of every TCP connection between the nodes, framing and acks included,
  from before the clients connect until after they disconnect, summed over the relays
  that count it (bridge: one per spoke, on its bridge connection to the hub; moha: one in
  front of each agent link listener that is dialled, carrying every link dialled to it);
  links = the connections through them at the end (bridge N-1, moha N(N-1)/2).
³ user+system CPU time of the broker and agent processes over the same window; the ratio
  column compares brokers+agents in total.
⁴ messages the agents sent to a peer (sent_messages on /status); agent CPU per forwarded
  message divides all agents' CPU time by that count.
⁵ the same CPU accounting from the first publish to the last delivery only, without
  connecting, subscribing and disconnecting the clients (which the agents follow too).
`

// WriteTable prints the setups side by side, with moha's figures over the
// bridge's in the last column when both ran, then the footnotes.
func (c *CompareResult) WriteTable(w io.Writer) error {
	if len(c.Rows) == 0 {
		_, err := fmt.Fprintln(w, "no setup completed")
		return err
	}
	first := c.Rows[0].Result
	moha, bridge := c.row(SetupMoha), c.row(SetupBridge)
	var b strings.Builder
	sessions := "clean"
	if first.Persistent {
		sessions = "persistent"
	}
	payload := fmt.Sprintf("%d B", first.Size)
	if first.Payload == PayloadJSON {
		payload = "JSON telemetry"
	}
	fmt.Fprintf(&b, "scenario %s: %d publishers x %d messages x %s, %d subscribers (%s sessions), QoS %d, pipeline %d\n",
		c.Scenario, first.Publishers, first.Messages, payload, first.Subscribers, sessions, first.QoS, first.Pipeline)
	if c.Nodes > 0 {
		fmt.Fprintf(&b, "%d nodes: bridge a star around mosquitto-a, moha a full mesh; single one broker; client i on node i mod %d\n",
			c.Nodes, c.Nodes)
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	header := []string{""}
	for _, r := range c.Rows {
		header = append(header, r.Setup)
	}
	if moha != nil && bridge != nil {
		header = append(header, "moha/bridge")
	}
	fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
	for _, line := range compareLines {
		cells := []string{line.label}
		for i := range c.Rows {
			cells = append(cells, line.value(&c.Rows[i]))
		}
		if moha != nil && bridge != nil {
			cells = append(cells, ratioCell(line, moha, bridge))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write comparison table: %w", err)
	}
	c.writeRounds(&b)
	b.WriteString("\n" + compareFootnotes)
	if _, err := io.WriteString(w, trimLineEnds(b.String())); err != nil {
		return fmt.Errorf("write comparison table: %w", err)
	}
	return nil
}

// writeRounds lists every round's moha/bridge ratios under the table when
// more than one round ran.
func (c *CompareResult) writeRounds(b *strings.Builder) {
	if len(c.Rounds) < 2 {
		return
	}
	fmt.Fprintf(b, "\nThe table is round %d of %d: the median moha/bridge delivered rate. Every round\n", c.Round, len(c.Rounds))
	b.WriteString("(setups interleaved, in the order they ran), moha/bridge:\n\n")
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tdelivered rate\tcross-node rate\tbytes\tCPU\tp99\t")
	for i, r := range c.Rounds {
		fmt.Fprintf(tw, "%d\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t%.2fx\t\n", i+1, r.DeliveredRate, r.CrossDeliveredRate, r.InterNodeBytes, r.CPU, r.LatencyP99)
	}
	_ = tw.Flush() // a strings.Builder does not fail
}

func ratioCell(line tableLine, moha, bridge *CompareRow) string {
	if line.figure == nil {
		return ""
	}
	if line.figure(bridge) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", line.figure(moha)/line.figure(bridge))
}

// trimLineEnds drops the padding tabwriter leaves at the end of lines.
func trimLineEnds(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

// groupDigits writes n with thousands separated by commas.
func groupDigits(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
