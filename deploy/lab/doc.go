// Package lab owns the moha namespace lab and its failure drills: a whole cluster —
// two load balancers (keepalived + HAProxy holding a floating IP), three nodes
// (mosquitto + agent) and a client — in Linux network namespaces on one machine,
// joined by a bridge, with configs rendered by moha. The drills (lab_test.go) kill
// brokers, agents and load balancers and partition the network, and measure how
// long clients go unserved and what they lose. lab.sh creates and removes the
// namespaces, by hand or for the test. The package has no code outside its tests.
package lab
