package eip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vipkeeper/vipkeeper/harness/netns"
	"github.com/vipkeeper/vipkeeper/harness/testutil"
)

const (
	// flowPort is the UDP echo port on the VIP.
	flowPort = 7200
	// flowSources is how many client addresses (198.51.100.2 and up)
	// new flows come from, each with source ports 1024–65535: with them
	// no flow reuses a conntrack tuple within a run.
	flowSources = 8
)

// BenchmarkGatewayNewFlows measures new UDP flows per second through a
// gateway namespace programmed by the Maps backend with 1 and with
// 10,000 mappings, every EIP limited to 1 Gbit/s (far above what the
// flows send), so each flow's packets run the NAT map lookups and the
// limit lookups. A flow is one request from a new source address and port
// to the EIP, so conntrack sees a new connection and the DNAT rule looks
// the EIP up, and the echo back through the reverse NAT; the client sends
// the next only after the answer. "interleaved" alternates flows through
// two gateways, one of each size, so that the load of a shared machine
// falls on both alike, and reports both rates and their ratio
// (10,000 over 1), which shows whether the per-packet cost grows with
// the number of mappings. A rate is flows over the time spent in them,
// from the socket's creation to the echo, without the handoff to the
// client goroutine.
//
// Beyond 254 mappings the idle ones come from RFC 2544's benchmarking
// range (manyMappings), in this benchmark's own namespaces; traffic goes
// only to the first, 203.0.113.5 → 192.0.2.10.
func BenchmarkGatewayNewFlows(b *testing.B) {
	testutil.RequireRoot(b)
	for _, size := range []int{1, 10_000} {
		b.Run(fmt.Sprintf("mappings=%d", size), func(b *testing.B) {
			l := startFlowLab(b, size)
			for b.Loop() {
				if err := l.flow(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(l.rate(), "flows/s")
		})
	}
	b.Run("interleaved", func(b *testing.B) {
		small, large := startFlowLab(b, 1), startFlowLab(b, 10_000)
		i := 0
		for b.Loop() {
			l := small
			if i%2 == 1 {
				l = large
			}
			i++
			if err := l.flow(); err != nil {
				b.Fatal(err)
			}
		}
		rs, rl := small.rate(), large.rate()
		b.ReportMetric(rs, "flows/s@1")
		b.ReportMetric(rl, "flows/s@10000")
		b.ReportMetric(rl/rs, "ratio")
	})
}

// flowLab is a gateway lab with a client goroutine inside its client
// namespace that makes one new flow per request.
type flowLab struct {
	req chan struct{}
	res chan error
	// Written by the client goroutine between a request and its answer.
	flows int
	busy  time.Duration
}

// flow makes one new flow through the lab's gateway.
func (l *flowLab) flow() error {
	l.req <- struct{}{}
	return <-l.res
}

// rate is the lab's flows per second of its own flow time.
func (l *flowLab) rate() float64 { return float64(l.flows) / l.busy.Seconds() }

func startFlowLab(b *testing.B, size int) *flowLab {
	client, gw, srv := gatewayLab(b)
	for i := 3; i < 2+flowSources; i++ {
		testutil.IP(b, "-n", client, "addr", "add", fmt.Sprintf("198.51.100.%d/24", i), "dev", "c0")
	}
	m := newNetnsMaps(b, gw, false)
	ms := manyMappings(size)
	ms[0].EIP, ms[0].VIP = addr("203.0.113.5"), addr("192.0.2.10")
	for i := range ms {
		ms[i].Bandwidth = 1000
	}
	if err := m.Apply(b.Context(), ms); err != nil {
		b.Fatal(err)
	}
	if st, err := m.Programmed(b.Context()); err != nil || st.Mappings != size {
		b.Fatalf("Programmed = %+v, %v; want %d mappings", st, err, size)
	}
	if l, err := m.Limits(); err != nil || len(l) != size {
		b.Fatalf("%d limits, %v; want %d", len(l), err, size)
	}

	var pc net.PacketConn
	if err := netns.Run(srv, func() (err error) {
		pc, err = net.ListenPacket("udp4", netip.AddrPortFrom(ms[0].VIP, flowPort).String())
		return err
	}); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	})

	l := &flowLab{req: make(chan struct{}), res: make(chan error)}
	eip := unix.SockaddrInet4{Port: flowPort, Addr: ms[0].EIP.As4()}
	wg.Go(func() {
		err := netns.Run(client, func() error {
			for range l.req {
				if l.flows == flowSources*(65536-1024) {
					l.res <- errors.New("out of new source ports: lower -benchtime")
					continue
				}
				src := unix.SockaddrInet4{Port: 1024 + l.flows%(65536-1024), Addr: [4]byte{198, 51, 100, byte(2 + l.flows/(65536-1024))}}
				l.flows++
				start := time.Now()
				err := flow(&src, &eip)
				l.busy += time.Since(start)
				if err != nil {
					err = fmt.Errorf("flow %d from %d.%d.%d.%d:%d: %w", l.flows, src.Addr[0], src.Addr[1], src.Addr[2], src.Addr[3], src.Port, err)
				}
				l.res <- err
			}
			return nil
		})
		if err != nil {
			b.Error(err)
		}
	})
	b.Cleanup(func() {
		close(l.req)
		pc.Close()
		wg.Wait()
	})
	return l
}

// flow sends one datagram from src to dst on a new socket and waits for
// its echo (at most two seconds).
func flow(src, dst *unix.SockaddrInet4) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 2}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	if err := unix.Bind(fd, src); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if err := unix.Connect(fd, dst); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	msg := []byte("new flow")
	if _, err := unix.Write(fd, msg); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, 64)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return fmt.Errorf("no echo: %w", err)
	}
	if string(buf[:n]) != string(msg) {
		return fmt.Errorf("echo %q", buf[:n])
	}
	return nil
}
