// Pay the next payout batch if this replica leads, fenced by leaderd's epoch. Go with
// database/sql and github.com/lib/pq. Env: LEADER_URL, PAYOUTS_DSN (libpq key=value), REPLICA.
// Exit 0: paid, or not leader; 3: fenced off (a newer epoch owns the pointer).
package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	_ "github.com/lib/pq"
)

type leader struct {
	IsLeader   bool   `json:"is_leader"`
	Epoch      int64  `json:"epoch"`
	LeaseUID   string `json:"lease_uid"`
	ValidForMs int64  `json:"valid_for_ms"`
}

func main() {
	url, replica := os.Getenv("LEADER_URL"), os.Getenv("REPLICA")
	if url == "" {
		url = "http://127.0.0.1:4040/leader"
	}
	// Connect first: the time between the read and the write must stay short.
	db, err := sql.Open("postgres", os.Getenv("PAYOUTS_DSN"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if err := db.Ping(); err != nil {
		log.Fatal(err)
	}
	// 1. The read. No answer from leaderd means "not leader".
	started := time.Now() // carries the monotonic clock
	var doc leader
	resp, err := (&http.Client{Timeout: time.Second}).Get(url)
	if err == nil {
		err = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
	}
	if err != nil || !doc.IsLeader {
		fmt.Println("not leader")
		return
	}
	// 2. The deadline: valid_for_ms counts from before our own read; keep a margin.
	deadline := started.Add(time.Duration(doc.ValidForMs-200) * time.Millisecond)

	// 3. The epoch on every write. Claim: raise the pointer's fence to our epoch, read pos.
	var pos int64
	err = db.QueryRow(`UPDATE payout_pointer SET epoch = $1, lease_uid = $2
	 WHERE name = 'payouts' AND epoch <= $1 RETURNING pos`, doc.Epoch, doc.LeaseUID).Scan(&pos)
	if err == sql.ErrNoRows {
		fmt.Printf("fenced off: epoch %d is stale\n", doc.Epoch)
		os.Exit(3)
	} else if err != nil {
		log.Fatal(err)
	}
	batch := pos + 1
	if !time.Now().Before(deadline) {
		fmt.Println("claim ran out before the write")
		return
	}
	// Move + pay in one transaction; the fence matched no row = roll back.
	tx, err := db.Begin()
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback() // no-op after Commit
	res, err := tx.Exec(`UPDATE payout_pointer SET pos = $1, epoch = $2, lease_uid = $3,
	 moved_by = $4, moved_at = now() WHERE name = 'payouts' AND epoch <= $2`,
		batch, doc.Epoch, doc.LeaseUID, replica)
	if err != nil {
		log.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		fmt.Printf("fenced off: epoch %d is stale, nothing paid\n", doc.Epoch)
		tx.Rollback()
		os.Exit(3)
	}
	for _, merchant := range []string{"m-ana", "m-bo", "m-cy"} {
		if _, err := tx.Exec(`INSERT INTO payouts (batch, merchant, amount_cents, epoch, lease_uid, replica)
		 VALUES ($1, $2, $3, $4, $5, $6)`, batch, merchant, 1000+batch%97, doc.Epoch, doc.LeaseUID, replica); err != nil {
			log.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("paid batch %d with epoch %d\n", batch, doc.Epoch)
}
