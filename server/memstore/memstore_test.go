package memstore_test

import (
	"testing"

	"github.com/sessionvault/sessionvault/server"
	"github.com/sessionvault/sessionvault/server/memstore"
	"github.com/sessionvault/sessionvault/server/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) server.Store { return memstore.New() })
}

func BenchmarkSeen(b *testing.B)   { storetest.BenchSeen(b, memstore.New()) }
func BenchmarkLane(b *testing.B)   { storetest.BenchLane(b, memstore.New()) }
func BenchmarkCreate(b *testing.B) { storetest.BenchCreate(b, memstore.New()) }
