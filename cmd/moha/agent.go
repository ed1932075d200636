package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/moha-project/moha/internal/agent"
	"github.com/moha-project/moha/internal/config"
	"github.com/moha-project/moha/internal/runtimetune"
)

func newAgentCommand(stderr io.Writer) *cobra.Command {
	var (
		clusterFile, node, logLevel           string
		brokerAddr, listen, httpAddr, dataSub string
		sched                                 string
		pprofOn                               bool
		procs                                 int
	)
	cmd := &cobra.Command{
		Use:   "agent --cluster FILE --node NAME",
		Short: "Run the agent beside one Mosquitto broker",
		Long: `Run the agent for one node of the cluster, beside (on the same host as) its
Mosquitto broker. The cluster file describes every node; the agent finds itself
by --node and treats the other nodes as its peers. Flags override the file.

The broker must publish its log on $SYS topics: render its config with
'moha render mosquitto --cluster FILE --node NAME'.

HTTP endpoints (on the node's http address):
  /healthz  the process is alive
  /readyz   200 when the broker sessions are up and this node reaches a majority
  /metrics  Prometheus metrics
  /status   JSON: peers, links, interest, degraded flag, counters

Go runtime: the agent runs on one OS thread for Go code (--procs) and
re-executes itself at start (same pid) with GODEBUG=schedtrace=2147483647,
which keeps the runtime's monitor thread from sleeping between bursts of
messages, so that waking up for the next one costs the agent less CPU. The
price is one scheduler summary line on stderr every 24.8 days. A GODEBUG that
names schedtrace already is left alone (schedtrace=0 opts out).

Scheduling: the agent's threads run under Linux's SCHED_BATCH policy (--sched).
A waking batch thread does not preempt the process running on its CPU, so
the broker, which clients wait on, is not interrupted each time it hands the
agent a message; the agent takes more at once when it runs, for less CPU.
Cross-node messages may wait up to a scheduler slice (a few ms) longer on a
busy host; --sched normal restores the default policy. An agent started under
another policy (chrt, systemd's CPUSchedulingPolicy=) keeps it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(stderr, logLevel)
			if err != nil {
				return err
			}
			if err := runtimetune.Apply(runtimetune.Options{Procs: procs, Sched: sched}, log); err != nil {
				return err
			}
			c, err := config.Load(clusterFile)
			if err != nil {
				return err
			}
			n, err := c.Node(node)
			if err != nil {
				return err
			}
			if brokerAddr != "" {
				n.Broker.Address = brokerAddr
			}
			if listen != "" {
				n.Link = listen
			}
			if httpAddr != "" {
				n.HTTP = httpAddr
			}
			if dataSub != "" {
				c.DataSubscription = dataSub
			}
			if err := c.Validate(); err != nil {
				return fmt.Errorf("invalid configuration after flags:\n%w", err)
			}
			a, err := agent.New(agent.Options{Cluster: c, Node: node, Logger: log, Pprof: pprofOn})
			if err != nil {
				return err
			}
			return a.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&clusterFile, "cluster", "cluster.yaml", "the cluster description (YAML)")
	f.StringVar(&node, "node", "", "this node's name in the cluster file (required)")
	f.StringVar(&brokerAddr, "broker", "", "override the local broker's host:port")
	f.StringVar(&listen, "listen", "", "override the address peer agents connect to (host:port)")
	f.StringVar(&httpAddr, "http", "", "override the HTTP address for health, metrics and status")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&dataSub, "data-subscription", "", "override data_subscription: all (every message reaches the agent, which keeps a replay history: no subscribe window) or interest (only what peers want: less broker work, but a subscription on another node misses what is published here until it is known here)")
	f.IntVar(&procs, "procs", 1, "OS threads running Go code (GOMAXPROCS) for the agent; 0: one per core. An explicit GOMAXPROCS environment variable wins")
	f.StringVar(&sched, "sched", "batch", "Linux scheduling policy of the agent's threads: batch (yields to the broker when it wakes) or normal")
	f.BoolVar(&pprofOn, "pprof", false, "serve Go's profiler at /debug/pprof/ on the HTTP address (exposes internals: keep that port private)")
	_ = cmd.MarkFlagRequired("node")
	return cmd
}
