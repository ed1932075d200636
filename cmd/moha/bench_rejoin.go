package main

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/moha-project/moha/internal/bench"
)

func newBenchRejoinCommand(stdout, stderr io.Writer) *cobra.Command {
	var (
		topics        int
		asJSON, quiet bool
		agentArgs     []string
	)
	cmd := &cobra.Command{
		Use:   "rejoin [--topics 100000]",
		Short: "Measure a node rejoining with an empty broker while the cluster holds many retained messages",
		Long: `Start a two-node moha cluster (real brokers, agents as child processes), write
--topics retained messages on node1, then give node2 a fresh, empty broker and
restart its agent. Reported:

  rejoin       from node2's agent starting until it holds every retained topic
               (the agents exchange digests in parts and node1 sends what node2 lacks)
  live         a QoS 1 message every 20 ms from node1 to a subscriber on node2
               while that happens: sent, lost, latency p50 and max (whether live
               traffic waits behind the digest and the retained messages)
  RSS          node1's agent (it answers the digest), node2's agent and broker`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			self, err := agentBinary()
			if err != nil {
				return err
			}
			o := bench.RejoinOptions{Topics: topics, AgentBinary: self, AgentArgs: agentArgs}
			if !quiet {
				o.Progress = stderr
			}
			r, err := bench.MeasureRejoin(cmd.Context(), o)
			if err != nil {
				return err
			}
			return printRows(stdout, asJSON, r, bench.WriteRejoinTable)
		},
	}
	f := cmd.Flags()
	f.IntVar(&topics, "topics", 100000, "retained topics written on node1")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.BoolVar(&quiet, "quiet", false, "no progress lines")
	f.StringArrayVar(&agentArgs, "agent-arg", nil, "extra argument for both agents, e.g. --agent-arg=--pprof (repeat)")
	return cmd
}
