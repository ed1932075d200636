package freeport

import (
	"net"
	"testing"
)

// TestAddrsAreDistinctAndFree: every address can be listened on, and none
// is handed out twice.
func TestAddrsAreDistinctAndFree(t *testing.T) {
	addrs, err := Addrs("127.0.0.1", 20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("%s handed out twice", a)
		}
		seen[a] = true
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s is not free: %v", a, err)
		}
		ln.Close()
	}
}

// TestReservedPortsAreNotHandedOut: while ports are reserved, Port (which
// closes what it opened, so the kernel may hand that port out again at
// once) never returns one of them.
func TestReservedPortsAreNotHandedOut(t *testing.T) {
	addrs, release, err := Reserve("127.0.0.1", 20)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	held := map[string]bool{}
	for _, a := range addrs {
		held[a] = true
	}
	for range 500 {
		a, err := Addr("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		if held[a] {
			t.Fatalf("%s was handed out while reserved", a)
		}
	}
	release()
	for _, a := range addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s is not free after release: %v", a, err)
		}
		ln.Close()
	}
}

func TestBadHost(t *testing.T) {
	if _, err := Port("256.0.0.1"); err == nil {
		t.Fatal("a port on an invalid host")
	}
}
