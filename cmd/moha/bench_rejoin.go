package main

import (
	"context"
	"io"

	"github.com/spf13/cobra"

	"github.com/moha-project/moha/internal/bench"
)

func newBenchRejoinCommand(stdout, stderr io.Writer) *cobra.Command {
	var (
		topics    int
		out       = benchOutput{stdout: stdout, stderr: stderr}
		agentArgs []string
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
			measure := func(ctx context.Context, self string, progress io.Writer) (bench.RejoinResult, error) {
				return bench.MeasureRejoin(ctx, bench.RejoinOptions{Topics: topics, AgentBinary: self, AgentArgs: agentArgs, Progress: progress})
			}
			return runBench(cmd.Context(), &out, measure, bench.WriteRejoinTable)
		},
	}
	f := cmd.Flags()
	f.IntVar(&topics, "topics", 100000, "retained topics written on node1")
	out.flags(f)
	f.StringArrayVar(&agentArgs, "agent-arg", nil, "extra argument for both agents, e.g. --agent-arg=--pprof (repeat)")
	return cmd
}
