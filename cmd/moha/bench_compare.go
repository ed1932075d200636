package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/moha-project/moha/internal/bench"
	"github.com/moha-project/moha/internal/config"
)

func newBenchCompareCommand(stdout, stderr io.Writer) *cobra.Command {
	var (
		wf                workloadFlags
		dir               string
		setups, agentArgs []string
		asJSON, quiet     bool
		rounds, replicas  int
		nodes             int
		compression       string
	)
	cmd := &cobra.Command{
		Use:   "compare [--scenario seed|fanout|fanin|wildcard|local] [--setups single,bridge,moha] [--nodes 2..5]",
		Short: "Run one workload against one Mosquitto, natively bridged Mosquittos and moha, side by side",
		Long: `Run the same workload, in this one invocation on this machine, against:

  single  one Mosquitto
  bridge  N Mosquitto joined by Mosquitto's own bridge ("topic # both 2": every
          message crosses to every other broker); with more than two, a star: every
          broker bridges to the first (the hub), and messages between two spokes
          go through it
  moha    N Mosquitto, each with a moha agent (a child process of this command);
          the agents form a full mesh, one link per pair

N is --nodes (2 by default). Every broker, agent and relay is started for its
setup and stopped before the next setup starts; nothing is left running.
Clients are given the N brokers' addresses in turn (client i uses broker i mod
N; single: the one broker N times), the same way for every setup, and the
workload is the one 'moha bench' runs.

What is measured, per setup:
  delivered, lost, duplicated, out of order   from the sequence number in each payload
  delivered rate, cross-node rate, latency    end to end, publish call to arrival
  bytes between brokers  both directions of all TCP traffic between the nodes,
                         MQTT / link framing and acknowledgements included, counted
                         by relays on the inter-node paths (bridge: one per spoke's
                         bridge connection to the hub; moha: one in front of each
                         agent's link listener, every link through exactly one),
                         from before the clients connect until after they
                         disconnect; also per delivered message
  broker / agent CPU     user+system CPU time of those processes over the same window,
                         and brokers+agents per delivered message: with those two
                         per-message figures, runs at several --nodes show whether
                         a setup's cost stays flat as it grows
  agent CPU per forwarded message   agents' CPU / messages they sent to a peer
  ... publishing         the CPU figures again, from the first publish to the last
                         delivery only: without connecting and disconnecting clients

The table ends with moha's figures over the bridge's (delivered rate, bytes, CPU,
latency). With --rounds R the setups run R times, interleaved; the table is the
round with the median moha/bridge delivered rate, and every round's ratios are
listed under it. Progress goes to stderr, the table (or --json) to stdout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o, err := wf.options(cmd)
			if err != nil {
				return err
			}
			if rounds < 1 {
				return fmt.Errorf("--rounds %d: at least 1", rounds)
			}
			if err := bench.CheckNodes(nodes); err != nil {
				return fmt.Errorf("--nodes: %w", err)
			}
			if !quiet {
				o.Progress = stderr
			}
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find own binary for the agents: %w", err)
			}
			copt := bench.CompareOptions{
				Bench: o, Setups: splitList(setups), Nodes: nodes, AgentBinary: self, AgentArgs: agentArgs,
				Dir: dir, Progress: stderr, Rounds: rounds,
			}
			if cmd.Flags().Changed("session-replicas") {
				copt.SessionReplicas = &replicas
			}
			copt.LinkCompression = compression
			res, err := bench.Compare(cmd.Context(), copt)
			if res != nil && len(res.Rows) > 0 {
				if werr := writeCompare(stdout, res, asJSON); werr != nil && err == nil {
					err = werr
				}
			}
			return err
		},
	}
	f := cmd.Flags()
	wf.register(f)
	f.StringSliceVar(&setups, "setups", nil, "setups to run, in order (default single,bridge,moha)")
	f.IntVar(&nodes, "nodes", bench.DefaultNodes, fmt.Sprintf("brokers in the bridge and moha setups, %d to %d: bridge a star (every broker bridges to the first), moha a full mesh (a link per pair of agents); single stays one broker, its address given to the clients as often", bench.MinNodes, bench.MaxNodes))
	f.IntVar(&replicas, "session-replicas", config.DefaultSessionReplicas, "moha setup: session_replicas (0, 1 or 2; at most --nodes minus 1 are kept): replicas of each persistent session (see --persistent)")
	f.StringVar(&compression, "link-compression", config.CompressionNone, "moha setup: link_compression (none or deflate): compress the batches between agents")
	f.IntVar(&rounds, "rounds", 1, "run the setups this many times, interleaved, and show the round with the median moha/bridge delivered rate, listing every round's ratios (a noisy machine moves single runs by ±10 %)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.BoolVar(&quiet, "quiet", false, "no per-second progress line (setup phases are still shown)")
	f.StringVar(&dir, "dir", "", "keep configs and logs here (default: a temporary directory, removed on success)")
	f.StringArrayVar(&agentArgs, "agent-arg", nil, "extra argument for every agent, e.g. --agent-arg=--pprof (repeat)")
	return cmd
}

func splitList(items []string) []string {
	var out []string
	for _, it := range items {
		if it = strings.TrimSpace(it); it != "" {
			out = append(out, it)
		}
	}
	return out
}

func writeCompare(w io.Writer, res *bench.CompareResult, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	return res.WriteTable(w)
}
