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
		compression       string
	)
	cmd := &cobra.Command{
		Use:   "compare [--scenario seed|fanout|fanin|wildcard|local] [--setups single,bridge,moha]",
		Short: "Run one workload against one Mosquitto, a native bridge pair and moha, side by side",
		Long: `Run the same workload, in this one invocation on this machine, against:

  single  one Mosquitto
  bridge  two Mosquitto joined by Mosquitto's own bridge ("topic # both 2": every
          message crosses to the other broker)
  moha    two Mosquitto, each with a moha agent (a child process of this command)

Every broker, agent and relay is started for its setup and stopped before the
next setup starts; nothing is left running. Clients are given the two brokers'
addresses in turn (client i uses broker i mod 2; single: the one broker twice),
the same way for every setup, and the workload is the one 'moha bench' runs.

What is measured, per setup:
  delivered, lost, duplicated, out of order   from the sequence number in each payload
  delivered rate, cross-node rate, latency    end to end, publish call to arrival
  bytes between brokers  both directions of all TCP traffic between the nodes,
                         MQTT / link framing and acknowledgements included, counted
                         by one relay on the inter-node path (bridge: broker B's
                         bridge connection to A; moha: the agent link), from before
                         the clients connect until after they disconnect
  broker / agent CPU     user+system CPU time of those processes over the same window
  agent CPU per forwarded message   agents' CPU / messages they sent to a peer
  ... publishing         the CPU figures again, from the first publish to the last
                         delivery only: without connecting and disconnecting clients

The table ends with moha's figures over the bridge's (delivered rate, bytes, CPU,
latency). With --rounds N the setups run N times, interleaved; the table is the
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
			if !quiet {
				o.Progress = stderr
			}
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("find own binary for the agents: %w", err)
			}
			copt := bench.CompareOptions{
				Bench: o, Setups: splitList(setups), AgentBinary: self, AgentArgs: agentArgs,
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
	f.IntVar(&replicas, "session-replicas", config.DefaultSessionReplicas, "moha setup: session_replicas (0 or 1 with two nodes): replicas of each persistent session (see --persistent)")
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
