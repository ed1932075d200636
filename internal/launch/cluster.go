package launch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/freeport"
	"github.com/moha-project/moha/internal/render"
)

// Options describe a local cluster.
type Options struct {
	Nodes  int    // brokers (each with its agent); default 3
	LBPort int    // HAProxy client port; 0 picks a free one; -1 starts no HAProxy
	Dir    string // state: cluster.yaml, cluster.json, node data, logs/
	// AgentBinary, when set, runs each agent as `AgentBinary agent --cluster
	// ... --node ...`; otherwise NewAgent must be set.
	AgentBinary string
	// NewAgent, used when AgentBinary is empty, builds each agent to run
	// inside this process (tests that read an agent's state directly).
	NewAgent NewAgentFunc
	// AgentArgs are extra command-line arguments per node for child-process
	// agents (e.g. "--listen" behind a counting relay).
	AgentArgs map[string][]string
	Logger    *slog.Logger
	// Configure, when set, may adjust the generated cluster description
	// before anything starts (tests shorten grace periods, say).
	Configure func(*config.Cluster)
}

// ErrNoAgent is Up's answer to Options that say neither how to start an
// agent process (AgentBinary) nor how to build one in-process (NewAgent).
var ErrNoAgent = errors.New("launch: no way to run an agent: set AgentBinary or NewAgent")

// InProcessAgent is an agent run inside this process: launch only runs it
// and stops it by cancelling Run's context. Launch does not import the
// agent, so that `moha up` and the benchmarks, whose agents are child
// processes, do not carry it; a test gets its concrete agent back with a
// type assertion on Cluster.Agent.
type InProcessAgent interface {
	Run(ctx context.Context) error
}

// NewAgentFunc builds node's agent of the cluster cfg, logging to log, for
// Options.NewAgent.
type NewAgentFunc func(cfg *config.Cluster, node string, log *slog.Logger) (InProcessAgent, error)

// Cluster is a running local cluster.
type Cluster struct {
	Config *config.Cluster
	Dir    string
	LB     string // HAProxy address, "" without HAProxy
	LBTLS  string // HAProxy's MQTT-over-TLS address, when the nodes have client_tls
	opt    Options

	mu      sync.Mutex
	brokers map[string]*Process
	agents  map[string]agentHandle
	haproxy *Process
}

// agentHandle is an agent run either as a child process or in-process.
type agentHandle struct {
	proc   *Process
	cancel context.CancelFunc
	done   chan error
	agent  InProcessAgent
}

// Endpoints is what cluster.json holds.
type Endpoints struct {
	LB    string         `json:"lb,omitempty"`
	Nodes []NodeEndpoint `json:"nodes"`
	Dir   string         `json:"dir"`
}

// NodeEndpoint is one node's addresses.
type NodeEndpoint struct {
	Name    string `json:"name"`
	Broker  string `json:"broker"`
	HTTP    string `json:"http"`
	Cluster string `json:"cluster"`
}

// plan writes the description of a local cluster on 127.0.0.1 with free
// ports and a fresh cluster secret into dir/cluster.yaml.
func plan(opt Options) (*config.Cluster, error) {
	if opt.Nodes < 1 {
		return nil, fmt.Errorf("launch: need at least 1 node, got %d", opt.Nodes)
	}
	c := config.Default()
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		return nil, fmt.Errorf("launch: generate cluster secret: %w", err)
	}
	c.Secret = hex.EncodeToString(secret)
	c.Nodes = nil
	// Three ports per node and two for HAProxy (client, TLS), held until
	// Configure has run: ports it picks cannot be these.
	ports, release, err := freeport.Reserve("127.0.0.1", 3*opt.Nodes+2)
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	defer release()
	for i := 1; i <= opt.Nodes; i++ {
		addrs := ports[3*(i-1) : 3*i]
		n := config.Node{Name: "node" + strconv.Itoa(i), Link: addrs[1], HTTP: addrs[2],
			DataDir: filepath.Join(opt.Dir, "node"+strconv.Itoa(i))}
		n.Broker.Address = addrs[0]
		c.Nodes = append(c.Nodes, n)
	}
	if opt.LBPort >= 0 {
		c.LoadBalancers.Port = opt.LBPort
		if opt.LBPort == 0 {
			_, c.LoadBalancers.Port, _ = config.SplitHostPort(ports[3*opt.Nodes]) // freeport's own host:port
		}
		_, c.LoadBalancers.TLSPort, _ = config.SplitHostPort(ports[3*opt.Nodes+1])
		c.LoadBalancers.MaxConn = min(c.LoadBalancers.MaxConn, maxConnForFDLimit())
	}
	if opt.Configure != nil {
		opt.Configure(&c)
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("launch: generated cluster description is invalid: %w", err)
	}
	data, err := c.Marshal()
	if err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	if err := os.MkdirAll(opt.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	// The file holds the cluster secret.
	if err := os.WriteFile(filepath.Join(opt.Dir, "cluster.yaml"), data, 0o600); err != nil {
		return nil, fmt.Errorf("launch: write cluster.yaml: %w", err)
	}
	return &c, nil
}

// Up starts a local cluster and returns once every process is ready:
// brokers accept connections, agents report ready, HAProxy listens. On any
// failure it stops what it started.
func Up(ctx context.Context, opt Options) (_ *Cluster, err error) {
	if opt.Nodes == 0 {
		opt.Nodes = 3
	}
	if opt.AgentBinary == "" && opt.NewAgent == nil {
		return nil, ErrNoAgent
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Dir, err = filepath.Abs(opt.Dir); err != nil {
		return nil, fmt.Errorf("launch: %w", err)
	}
	if _, err := FindBinary("mosquitto"); err != nil {
		return nil, err
	}
	if opt.LBPort >= 0 {
		if _, err := FindBinary("haproxy"); err != nil {
			return nil, err
		}
		if opt.LBPort > 0 {
			if err := portFree(opt.LBPort); err != nil {
				return nil, err
			}
		}
	}
	cfg, err := plan(opt)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Config: cfg, Dir: opt.Dir, opt: opt, brokers: map[string]*Process{}, agents: map[string]agentHandle{}}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	for _, n := range cfg.Nodes {
		if err := c.StartBroker(ctx, n.Name); err != nil {
			return nil, err
		}
	}
	for _, n := range cfg.Nodes {
		if err := c.StartAgent(ctx, n.Name); err != nil {
			return nil, err
		}
	}
	for _, n := range cfg.Nodes {
		if err := c.WaitReady(ctx, n.Name); err != nil {
			return nil, err
		}
	}
	if opt.LBPort >= 0 {
		if err := c.startHAProxy(ctx); err != nil {
			return nil, err
		}
	}
	if err := c.writeEndpoints(); err != nil {
		return nil, err
	}
	return c, nil
}

func portFree(port int) error {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("launch: load balancer port %d is not free (choose another with --port): %w", port, err)
	}
	return ln.Close()
}

// maxConnForFDLimit is the largest HAProxy maxconn this machine's open-file
// limit allows: HAProxy needs two descriptors per proxied connection and
// refuses to start when it cannot raise its limit that far.
func maxConnForFDLimit() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Max > 1<<30 {
		return 1 << 30
	}
	return max(100, int(lim.Max-200)/2)
}

// MustNode returns the named node's description and panics when the
// cluster has no such node: for tests and callers whose names come from the
// cluster's own configuration.
func (c *Cluster) MustNode(name string) *config.Node {
	n, err := c.Config.Node(name)
	if err != nil {
		panic(err)
	}
	return n
}

func (c *Cluster) logPath(name string) string {
	return filepath.Join(c.Dir, "logs", name+".log")
}

// StartBroker renders node's mosquitto config and starts the broker.
func (c *Cluster) StartBroker(ctx context.Context, node string) error {
	n, err := c.Config.Node(node)
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	text, err := render.Mosquitto(c.Config, node, render.MosquittoOptions{User: currentUser()})
	if err != nil {
		return fmt.Errorf("launch: render mosquitto %s: %w", node, err)
	}
	cfgPath := filepath.Join(n.DataDir, "mosquitto.conf")
	if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	bin, err := FindBinary("mosquitto")
	if err != nil {
		return err
	}
	p, err := Start("mosquitto-"+node, c.logPath("mosquitto-"+node), bin, "-c", cfgPath)
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	c.mu.Lock()
	c.brokers[node] = p
	c.mu.Unlock()
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := WaitTCP(wait, n.Broker.Address, p); err != nil {
		return fmt.Errorf("launch: mosquitto %s: %w", node, err)
	}
	return nil
}

// Broker returns node's broker process.
func (c *Cluster) Broker(node string) *Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.brokers[node]
}

// StartAgent starts node's agent: a child process when Options.AgentBinary
// is set, otherwise in-process from Options.NewAgent.
func (c *Cluster) StartAgent(ctx context.Context, node string) error {
	var h agentHandle
	var err error
	if c.opt.AgentBinary != "" {
		h, err = c.startAgentProcess(node)
	} else {
		h, err = c.startAgentInProcess(node)
	}
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.agents[node] = h
	c.mu.Unlock()
	return nil
}

func (c *Cluster) startAgentProcess(node string) (agentHandle, error) {
	cfgPath := filepath.Join(c.Dir, "cluster.yaml")
	args := append([]string{"agent", "--cluster", cfgPath, "--node", node}, c.opt.AgentArgs[node]...)
	p, err := Start("agent-"+node, c.logPath("agent-"+node), c.opt.AgentBinary, args...)
	if err != nil {
		return agentHandle{}, fmt.Errorf("launch: %w", err)
	}
	return agentHandle{proc: p}, nil
}

func (c *Cluster) startAgentInProcess(node string) (agentHandle, error) {
	a, err := c.opt.NewAgent(c.Config, node, c.opt.Logger)
	if err != nil {
		return agentHandle{}, fmt.Errorf("launch: %w", err)
	}
	// Not ctx: the agent outlives the start-up deadline; StopAgent ends it.
	actx, cancel := context.WithCancel(context.Background())
	h := agentHandle{agent: a, cancel: cancel, done: make(chan error, 1)}
	go func() { h.done <- a.Run(actx) }()
	return h, nil
}

// AgentProcess returns node's agent child process (nil for in-process agents).
func (c *Cluster) AgentProcess(node string) *Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.agents[node].proc
}

// Agent returns node's in-process agent as Options.NewAgent built it (nil
// for a child process or a stopped agent).
func (c *Cluster) Agent(node string) InProcessAgent {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.agents[node].agent
}

// StopAgent stops node's agent and waits for it.
func (c *Cluster) StopAgent(node string) {
	c.mu.Lock()
	h, ok := c.agents[node]
	delete(c.agents, node)
	c.mu.Unlock()
	if !ok {
		return
	}
	if h.proc != nil {
		h.proc.Stop(5 * time.Second)
		return
	}
	h.cancel()
	<-h.done
}

// WaitReady waits until node's agent answers /readyz with 200.
func (c *Cluster) WaitReady(ctx context.Context, node string) error {
	n, err := c.Config.Node(node)
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	c.mu.Lock()
	h := c.agents[node]
	c.mu.Unlock()
	wait, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := WaitHTTP(wait, "http://"+n.HTTP+"/readyz", h.proc); err != nil {
		return fmt.Errorf("launch: agent %s not ready: %w", node, err)
	}
	return nil
}

func (c *Cluster) startHAProxy(ctx context.Context) error {
	lb := c.Config.LoadBalancers
	c.LB = net.JoinHostPort("127.0.0.1", strconv.Itoa(lb.Port))
	opt := render.HAProxyOptions{Bind: c.LB}
	if c.Config.ClientTLSNodes() > 0 {
		c.LBTLS = net.JoinHostPort("127.0.0.1", strconv.Itoa(lb.TLSPort))
		opt.TLSBind = c.LBTLS
	}
	text, err := render.HAProxy(c.Config, opt)
	if err != nil {
		return fmt.Errorf("launch: render haproxy: %w", err)
	}
	cfgPath := filepath.Join(c.Dir, "haproxy.cfg")
	if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	bin, err := FindBinary("haproxy")
	if err != nil {
		return err
	}
	// -db: stay in the foreground so this process owns it.
	p, err := Start("haproxy", c.logPath("haproxy"), bin, "-db", "-f", cfgPath)
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	c.mu.Lock()
	c.haproxy = p
	c.mu.Unlock()
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := WaitTCP(wait, c.LB, p); err != nil {
		return fmt.Errorf("launch: haproxy: %w", err)
	}
	if c.LBTLS != "" {
		if err := WaitTCP(wait, c.LBTLS, p); err != nil {
			return fmt.Errorf("launch: haproxy tls: %w", err)
		}
	}
	return nil
}

// Endpoints returns the cluster's addresses.
func (c *Cluster) Endpoints() Endpoints {
	e := Endpoints{LB: c.LB, Dir: c.Dir}
	for _, n := range c.Config.Nodes {
		e.Nodes = append(e.Nodes, NodeEndpoint{Name: n.Name, Broker: n.Broker.Address, HTTP: n.HTTP, Cluster: n.Link})
	}
	return e
}

// writeEndpoints writes cluster.json, atomically: a reader that sees the
// file sees a ready cluster.
func (c *Cluster) writeEndpoints() error {
	data, err := json.MarshalIndent(c.Endpoints(), "", "  ")
	if err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	tmp := filepath.Join(c.Dir, ".cluster.json.tmp")
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("launch: %w", err)
	}
	return os.Rename(tmp, filepath.Join(c.Dir, "cluster.json"))
}

// Close stops everything the cluster started: HAProxy, then agents, then
// brokers. Safe to call twice.
func (c *Cluster) Close() error {
	_ = os.Remove(filepath.Join(c.Dir, "cluster.json"))
	c.mu.Lock()
	hp := c.haproxy
	c.haproxy = nil
	var names []string
	for n := range c.agents {
		names = append(names, n)
	}
	brokers := c.brokers
	c.brokers = map[string]*Process{}
	c.mu.Unlock()
	if hp != nil {
		hp.Stop(5 * time.Second)
	}
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Go(func() { c.StopAgent(n) })
	}
	wg.Wait()
	for _, p := range brokers {
		wg.Go(func() { p.Stop(5 * time.Second) })
	}
	wg.Wait()
	return nil
}

// currentUser names this process's account: a broker started by root keeps
// running as root instead of switching to "mosquitto", which could not write
// the data directory moha created.
func currentUser() string {
	u, err := user.Current()
	if err != nil {
		return ""
	}
	return u.Username
}
