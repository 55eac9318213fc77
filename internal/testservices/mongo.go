package testservices

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
)

// Mongo is a MongoDB-wire server: FerretDB on a throwaway PostgreSQL cluster.
type Mongo struct {
	// URI is the mongodb:// URI of the FerretDB server.
	URI      string
	dir      string
	binDir   string
	pgPort   string
	cred     *syscall.Credential
	postgres *process
	ferret   *process
}

const ferretHint = "run `make tools` to build bin/ferretdb"

// postgresBinDir finds PostgreSQL's server binaries: $DELAUTO_PG_BINDIR, else
// the newest of Debian's /usr/lib/postgresql/*/bin, preferring 15.
func postgresBinDir() (string, error) {
	if d := os.Getenv("DELAUTO_PG_BINDIR"); d != "" {
		return d, nil
	}
	if _, err := os.Stat("/usr/lib/postgresql/15/bin/initdb"); err == nil {
		return "/usr/lib/postgresql/15/bin", nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Strings(dirs)
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "initdb")); err == nil {
			return dirs[i], nil
		}
	}
	return "", fmt.Errorf("PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin: install Debian's postgresql-15 package, or set DELAUTO_PG_BINDIR")
}

// postgresCredential makes root's children run as the postgres user (the
// server refuses to run as root); other users run it as themselves.
func postgresCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL needs the postgres user: %w (install Debian's postgresql package)", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// idLookupIndexSQL gives every table FerretDB creates for a collection a GIN
// index on the document's _id, and those of the insights collections one on
// their lookup key (lk), so finds and updates by _id or lk do not scan the
// call log (why: docs/operations.md, "Running on FerretDB 1.x", which gives
// production the same SQL; TestOperationsDocGivesTheIndexSQL keeps the two
// equal). MongoDB always finds a document by _id through its index; this
// keeps the local MongoDB-wire server's costs of the same shape.
const idLookupIndexSQL = `
CREATE FUNCTION delauto_index_id_lookups() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE
	r record;
BEGIN
	FOR r IN SELECT objid::regclass AS tbl FROM pg_event_trigger_ddl_commands()
		WHERE command_tag = 'CREATE TABLE' AND object_type = 'table'
	LOOP
		IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = r.tbl AND attname = '_jsonb' AND NOT attisdropped) THEN
			EXECUTE format('CREATE INDEX ON %s USING gin ((_jsonb->''_id'') jsonb_path_ops)', r.tbl);
			IF (SELECT relname FROM pg_class WHERE oid = r.tbl) LIKE 'insights\_%' THEN
				EXECUTE format('CREATE INDEX ON %s USING gin ((_jsonb->''lk'') jsonb_path_ops)', r.tbl);
			END IF;
		END IF;
	END LOOP;
END $$;
CREATE EVENT TRIGGER delauto_index_id_lookups ON ddl_command_end
	WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION delauto_index_id_lookups();
`

// StartMongo initialises a PostgreSQL cluster in a temporary folder, starts
// it and FerretDB on free loopback ports, and waits until a MongoDB client
// can ping it.
func StartMongo() (*Mongo, error) {
	binDir, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	ferretBin, err := lookBinary("DELAUTO_FERRETDB", "ferretdb", ferretHint)
	if err != nil {
		return nil, err
	}
	cred, err := postgresCredential()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "delauto-pg-")
	if err != nil {
		return nil, err
	}
	m := &Mongo{dir: dir}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			m.Stop()
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(binDir, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		m.Stop()
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}

	var pgAddr, pgPort string
	for try := 0; ; try++ {
		port, err := freePort()
		if err != nil {
			m.Stop()
			return nil, err
		}
		pgPort = itoa(port)
		pgAddr = net.JoinHostPort("127.0.0.1", pgPort)
		m.binDir, m.pgPort, m.cred = binDir, pgPort, cred
		if m.postgres, err = startProcess("postgres", m.postgresCmd()); err != nil {
			m.Stop()
			return nil, err
		}
		if err = waitTCP(m.postgres, pgAddr, 30*time.Second); err == nil {
			break
		} else if try == 2 {
			m.Stop()
			return nil, err
		}
		m.postgres.kill()
	}

	// PostgreSQL listens before it accepts connections ("the database
	// system is starting up"): give it a few seconds.
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, err := m.SQL(idLookupIndexSQL)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			m.Stop()
			return nil, fmt.Errorf("indexing FerretDB's _id lookups: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	for try := 0; ; try++ {
		port, err := freePort()
		if err != nil {
			m.Stop()
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", itoa(port))
		cmd := exec.Command(ferretBin, "-listen", addr, "-postgresql-url", "postgres://postgres@"+pgAddr+"/postgres")
		if m.ferret, err = startProcess("ferretdb", cmd); err != nil {
			m.Stop()
			return nil, err
		}
		if err = waitTCP(m.ferret, addr, 30*time.Second); err == nil {
			m.URI = "mongodb://" + addr + "/"
			break
		} else if try == 2 {
			m.Stop()
			return nil, err
		}
		m.ferret.kill()
	}
	if err := m.ping(30 * time.Second); err != nil {
		m.Stop()
		return nil, err
	}
	return m, nil
}

// postgresCmd is the PostgreSQL server of the cluster in m.dir on m.pgPort.
func (m *Mongo) postgresCmd() *exec.Cmd {
	cmd := exec.Command(filepath.Join(m.binDir, "postgres"), "-D", filepath.Join(m.dir, "data"), "-p", m.pgPort,
		"-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="+m.dir,
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "shared_buffers=256MB",
		// FerretDB's filters name the field as a parameter (_jsonb->$1);
		// only a plan made for the actual values can use idLookupIndexSQL's indexes.
		"-c", "plan_cache_mode=force_custom_plan")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: m.cred}
	return cmd
}

// StopPostgres stops the PostgreSQL server under FerretDB (a fast
// shutdown: open connections are cut, as in an outage); FerretDB stays up
// and fails what reaches the database. StartPostgres brings it back.
func (m *Mongo) StopPostgres() {
	p := m.postgres
	if p.exited() {
		return
	}
	// SIGINT is PostgreSQL's fast shutdown; SIGTERM (smart) would wait for
	// FerretDB's pooled connections to close.
	_ = syscall.Kill(p.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.kill()
	}
}

// StartPostgres starts the PostgreSQL server stopped by StopPostgres again,
// on the same port and data, and waits until it accepts queries.
func (m *Mongo) StartPostgres() error {
	if !m.postgres.exited() {
		return nil
	}
	p, err := startProcess("postgres", m.postgresCmd())
	if err != nil {
		return err
	}
	m.postgres = p
	for deadline := time.Now().Add(30 * time.Second); ; {
		_, err := m.SQL("SELECT 1")
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return p.failure(fmt.Sprintf("no answer after a restart: %v", err))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (m *Mongo) ping(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := mongo.Connect(options.Client().ApplyURI(m.URI))
	if err != nil {
		return err
	}
	defer c.Disconnect(context.Background())
	for {
		err := c.Ping(ctx, readpref.Primary())
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return m.ferret.failure(fmt.Sprintf("no answer to ping: %v", err))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// SQL runs statements on the PostgreSQL database under FerretDB with psql
// and returns the output, unaligned and without headers.
func (m *Mongo) SQL(statements string) (string, error) {
	cmd := exec.Command(filepath.Join(m.binDir, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", m.dir, "-p", m.pgPort, "-U", "postgres", "-d", "postgres", "-c", statements)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: m.cred}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("psql: %v\n%s", err, out)
	}
	return string(out), nil
}

// Client connects a new MongoDB client; the caller disconnects it.
func (m *Mongo) Client() (*mongo.Client, error) {
	return mongo.Connect(options.Client().ApplyURI(m.URI))
}

// Stop ends FerretDB and PostgreSQL and removes the cluster's files.
func (m *Mongo) Stop() {
	if m == nil {
		return
	}
	m.ferret.stop(5 * time.Second)
	m.postgres.stop(10 * time.Second)
	os.RemoveAll(m.dir)
}

// DropDatabase drops database name (a test's call log), connecting for it.
func (m *Mongo) DropDatabase(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := m.Client()
	if err != nil {
		return err
	}
	defer c.Disconnect(context.Background())
	return c.Database(name).Drop(ctx)
}
