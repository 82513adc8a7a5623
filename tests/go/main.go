// A Go service built on DTM's own Go SDK (the client packages of github.com/dtm-labs/dtm at
// the pinned server tag), used by the interop tests to take part in the same workflows as
// the Rust SDK and to guard branches with the same barrier tables and keys.
//
// Configured by environment: DTM_HTTP (DTM's HTTP API), LISTEN (host:port of this service,
// which is also its workflow callback), BUSI (base URL of the test service its HTTP step
// calls), and for the barrier MYSQL_DSN, PG_DSN, REDIS_ADDR and MONGO_URI (each optional:
// a store without its variable answers an error).
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"strconv"
	"sync"

	"github.com/dtm-labs/dtm/client/dtmcli"
	"github.com/dtm-labs/dtm/client/workflow"
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/lib/pq"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"
)

// Name is the workflow both SDKs register: a local step, then an HTTP call; its result
// joins both step results so that a resumed run shows what the replayed steps returned.
const Name = "interop-steps"

var (
	mu        sync.Mutex
	localRuns = map[string]int{}
)

func main() {
	dtm, listen, busi := os.Getenv("DTM_HTTP"), os.Getenv("LISTEN"), os.Getenv("BUSI")
	workflow.InitHTTP(dtm, "http://"+listen+"/wf/resume")
	err := workflow.Register2(Name, func(wf *workflow.Workflow, data []byte) ([]byte, error) {
		wf.NewBranch()
		local, err := wf.Do(func(bb *dtmcli.BranchBarrier) ([]byte, error) {
			mu.Lock()
			localRuns[wf.Gid]++
			mu.Unlock()
			return append([]byte("go-local:"), data...), nil
		})
		if err != nil {
			return nil, err
		}
		wf.NewBranch()
		resp, err := wf.NewRequest().
			SetHeader("Content-Type", "application/json").
			SetBody(`{"amount":1}`).
			Post(busi + "/TransIn")
		if err != nil {
			return nil, err
		}
		return append(append(local, '|'), resp.Body()...), nil
	})
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/wf/resume", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		answer(w, workflow.ExecuteByQS(r.URL.Query(), body))
	})
	http.HandleFunc("/start", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		res, err := workflow.ExecuteCtx(context.Background(), Name, r.URL.Query().Get("gid"), body)
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"result": string(res), "error": msg})
	})
	http.HandleFunc("/local_runs", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n := localRuns[r.URL.Query().Get("gid")]
		mu.Unlock()
		_ = json.NewEncoder(w).Encode(n)
	})
	http.HandleFunc("/barrier", barrier(openStores()))
	log.Printf("go interop service on %s", listen)
	log.Fatal(http.ListenAndServe(listen, nil))
}

// answer maps a workflow outcome to DTM's HTTP convention.
func answer(w http.ResponseWriter, err error) {
	switch {
	case err == nil:
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"dtm_result":"SUCCESS"}`))
	case errors.Is(err, dtmcli.ErrFailure):
		w.WriteHeader(http.StatusConflict)
		_, _ = w.Write([]byte(`{"dtm_result":"FAILURE"}`))
	case errors.Is(err, dtmcli.ErrOngoing):
		w.WriteHeader(http.StatusTooEarly)
		_, _ = w.Write([]byte(`{"dtm_result":"ONGOING"}`))
	default:
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte(err.Error()))
	}
}

// stores are the barrier backends this service was given.
type stores struct {
	mysql, pg *sql.DB
	redis     *redis.Client
	mongo     *mongo.Client
}

func openStores() *stores {
	s := &stores{}
	var err error
	if dsn := os.Getenv("MYSQL_DSN"); dsn != "" {
		if s.mysql, err = sql.Open("mysql", dsn); err != nil {
			log.Fatal(err)
		}
	}
	if dsn := os.Getenv("PG_DSN"); dsn != "" {
		if s.pg, err = sql.Open("postgres", dsn); err != nil {
			log.Fatal(err)
		}
	}
	if addr := os.Getenv("REDIS_ADDR"); addr != "" {
		s.redis = redis.NewClient(&redis.Options{Addr: addr})
	}
	if uri := os.Getenv("MONGO_URI"); uri != "" {
		if s.mongo, err = mongo.Connect(context.Background(), options.Client().ApplyURI(uri)); err != nil {
			log.Fatal(err)
		}
	}
	return s
}

// barrier runs an empty business guarded by the Go SDK's branch barrier on the store named
// by the query's "store" (mysql, postgres, redis, mongo), for the branch named by the
// query's trans_type, gid, branch_id and op, and answers {"ran": whether the business ran,
// "error": ...}. On redis the business is RedisCheckAdjustAmount(key, amount).
func barrier(s *stores) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		ran := false
		busi := func() { ran = true }
		bb, err := dtmcli.BarrierFromQuery(q)
		if err == nil {
			switch q.Get("store") {
			case "mysql":
				err = callSQL(bb, s.mysql, dtmcli.DBTypeMysql, busi)
			case "postgres":
				err = callSQL(bb, s.pg, dtmcli.DBTypePostgres, busi)
			case "redis":
				amount, _ := strconv.Atoi(q.Get("amount"))
				if s.redis == nil {
					err = errors.New("no REDIS_ADDR")
				} else {
					err = bb.RedisCheckAdjustAmount(s.redis, q.Get("key"), amount, 86400)
				}
			case "mongo":
				if s.mongo == nil {
					err = errors.New("no MONGO_URI")
				} else {
					err = bb.MongoCall(s.mongo, func(mongo.SessionContext) error { busi(); return nil })
				}
			default:
				err = fmt.Errorf("unknown store %q", q.Get("store"))
			}
		}
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		_ = json.NewEncoder(w).Encode(map[string]interface{}{"ran": ran, "error": msg})
	}
}

func callSQL(bb *dtmcli.BranchBarrier, db *sql.DB, dbType string, busi func()) error {
	if db == nil {
		return fmt.Errorf("no DSN for %s", dbType)
	}
	bb.DBType = dbType
	return bb.CallWithDB(db, func(*sql.Tx) error { busi(); return nil })
}
