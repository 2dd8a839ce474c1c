package hub

import (
	"testing"

	"github.com/sessionvault/sessionvault/internal/protocol"
)

// These benchmarks compare the lane table the hub uses (64 mutex-guarded shards) with the chat
// example's design (one goroutine owns the set; Send asks it over a channel and waits for the
// count) on the operations the hub needs, with 10,000 lanes registered. The connections are
// bare queues that the benchmark loop drains, so only the table's cost is measured.
//
//	go test -run X -bench Table -cpu 1,2 ./server/internal/hub

const benchLanes = 10_000

func benchConns() ([]protocol.LaneID, []*conn) {
	lanes := make([]protocol.LaneID, benchLanes)
	conns := make([]*conn, benchLanes)
	for i := range lanes {
		lanes[i] = testLane(i)
		conns[i] = &conn{lane: lanes[i], send: make(chan []byte, DefaultSendQueue), done: make(chan struct{})}
	}
	return lanes, conns
}

// ownerTable is the chat example's hub reduced to what Send, register and unregister need.
type ownerTable struct {
	reg, unreg chan *conn
	send       chan ownerSend
	stop       chan struct{}
}

type ownerSend struct {
	lane  protocol.LaneID
	b     []byte
	reply chan int
}

func newOwnerTable() *ownerTable {
	o := &ownerTable{reg: make(chan *conn), unreg: make(chan *conn), send: make(chan ownerSend), stop: make(chan struct{})}
	go func() {
		lanes := make(map[protocol.LaneID][]*conn)
		for {
			select {
			case c := <-o.reg:
				lanes[c.lane] = append(lanes[c.lane], c)
			case c := <-o.unreg:
				delete(lanes, c.lane)
			case s := <-o.send:
				n := 0
				for _, c := range lanes[s.lane] {
					select {
					case c.send <- s.b:
						n++
					default:
					}
				}
				s.reply <- n
			case <-o.stop:
				return
			}
		}
	}()
	return o
}

func (o *ownerTable) Send(lane protocol.LaneID, b []byte) int {
	r := make(chan int, 1)
	o.send <- ownerSend{lane, b, r}
	return <-r
}

func newShardedTable(conns []*conn) *Hub {
	h := New(Config{})
	for _, c := range conns {
		s := h.shard(c.lane)
		s.lanes[c.lane] = append(s.lanes[c.lane], c)
	}
	return h
}

func BenchmarkTableSend(b *testing.B) {
	ev := seal(b, testLane(0), 1)
	b.Run("sharded", func(b *testing.B) {
		lanes, conns := benchConns()
		h := newShardedTable(conns)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			j := i % benchLanes
			if h.Send(lanes[j], ev) != 1 {
				b.Fatal("not sent")
			}
			<-conns[j].send
		}
	})
	b.Run("owner", func(b *testing.B) {
		lanes, conns := benchConns()
		o := newOwnerTable()
		defer close(o.stop)
		for _, c := range conns {
			o.reg <- c
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			j := i % benchLanes
			if o.Send(lanes[j], ev) != 1 {
				b.Fatal("not sent")
			}
			<-conns[j].send
		}
	})
}

// Concurrent Sends (a RevokeUser, the sweeper and requests at once), each goroutine on its own
// lanes.
func BenchmarkTableSendParallel(b *testing.B) {
	ev := seal(b, testLane(0), 1)
	run := func(b *testing.B, send func(protocol.LaneID, []byte) int, lanes []protocol.LaneID, conns []*conn) {
		var next int64
		var mu = make(chan struct{}, 1)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			mu <- struct{}{}
			base := int(next)
			next += 1000
			<-mu
			i := 0
			for pb.Next() {
				j := (base + i%1000) % benchLanes
				i++
				if send(lanes[j], ev) != 1 {
					panic("not sent")
				}
				<-conns[j].send
			}
		})
	}
	b.Run("sharded", func(b *testing.B) {
		lanes, conns := benchConns()
		h := newShardedTable(conns)
		run(b, h.Send, lanes, conns)
	})
	b.Run("owner", func(b *testing.B) {
		lanes, conns := benchConns()
		o := newOwnerTable()
		defer close(o.stop)
		for _, c := range conns {
			o.reg <- c
		}
		run(b, o.Send, lanes, conns)
	})
}

// Register and unregister, as 10,000 workers reconnect after a restart.
func BenchmarkTableChurn(b *testing.B) {
	b.Run("sharded", func(b *testing.B) {
		_, conns := benchConns()
		h := newShardedTable(nil)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c := conns[i%benchLanes]
			s := h.shard(c.lane)
			s.mu.Lock()
			s.lanes[c.lane] = append(s.lanes[c.lane], c)
			c.registered = true
			h.registered.Add(1)
			s.mu.Unlock()
			h.unregister(c)
		}
	})
	b.Run("owner", func(b *testing.B) {
		_, conns := benchConns()
		o := newOwnerTable()
		defer close(o.stop)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c := conns[i%benchLanes]
			o.reg <- c
			o.unreg <- c
		}
	})
}
