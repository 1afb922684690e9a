// Pay the next payout batch if this replica leads, fenced by leaderd's epoch. Java 17, JDBC
// with the PostgreSQL driver on the classpath: java -cp postgresql.jar PayOnce.java
// Env: LEADER_URL, PAYOUTS_JDBC_URL (jdbc:postgresql://HOST:PORT/DB?user=U), REPLICA.
// Exit 0: paid, or not leader; 3: fenced off (a newer epoch owns the pointer).
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.time.Duration;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class PayOnce {
    /** One field of leaderd's flat JSON (use your JSON library). */
    static String field(String json, String name) {
        Matcher m = Pattern.compile("\"" + name + "\":\"?([^\",}]*)").matcher(json);
        return m.find() ? m.group(1) : null;
    }

    public static void main(String[] args) throws Exception {
        String url = System.getenv().getOrDefault("LEADER_URL", "http://127.0.0.1:4040/leader");
        String replica = System.getenv().getOrDefault("REPLICA", "java");
        // Connect first: the time between the read and the write must stay short.
        HttpClient http = HttpClient.newHttpClient();
        HttpRequest req = HttpRequest.newBuilder(URI.create(url)).timeout(Duration.ofSeconds(1)).build();
        try (Connection db = DriverManager.getConnection(System.getenv("PAYOUTS_JDBC_URL"))) {
            // 1. The read. No answer from leaderd means "not leader".
            long started = System.nanoTime();
            String doc;
            try {
                doc = http.send(req, HttpResponse.BodyHandlers.ofString()).body();
            } catch (java.io.IOException e) {
                System.out.println("not leader (no answer)");
                return;
            }
            if (!"true".equals(field(doc, "is_leader"))) {
                System.out.println("not leader");
                return;
            }
            long epoch = Long.parseLong(field(doc, "epoch"));
            String uid = field(doc, "lease_uid");
            // 2. The deadline: valid_for_ms counts from before our own read; keep a margin.
            long deadline = started + (Long.parseLong(field(doc, "valid_for_ms")) - 200) * 1_000_000L;

            // 3. The epoch on every write. Claim: raise the pointer's fence to our epoch, read pos.
            long batch;
            try (PreparedStatement claim = db.prepareStatement(
                    "UPDATE payout_pointer SET epoch = ?, lease_uid = ?"
                    + " WHERE name = 'payouts' AND epoch <= ? RETURNING pos")) {
                claim.setLong(1, epoch);
                claim.setString(2, uid);
                claim.setLong(3, epoch);
                ResultSet rs = claim.executeQuery();
                if (!rs.next()) {
                    System.out.println("fenced off: epoch " + epoch + " is stale");
                    System.exit(3);
                }
                batch = rs.getLong(1) + 1;
            }
            if (System.nanoTime() - deadline >= 0) {
                System.out.println("claim ran out before the write");
                return;
            }
            // Move + pay in one transaction; the fence matched no row = roll back.
            db.setAutoCommit(false);
            try (PreparedStatement move = db.prepareStatement(
                    "UPDATE payout_pointer SET pos = ?, epoch = ?, lease_uid = ?, moved_by = ?,"
                    + " moved_at = now() WHERE name = 'payouts' AND epoch <= ?");
                 PreparedStatement pay = db.prepareStatement(
                    "INSERT INTO payouts (batch, merchant, amount_cents, epoch, lease_uid, replica)"
                    + " VALUES (?, ?, ?, ?, ?, ?)")) {
                move.setLong(1, batch);
                move.setLong(2, epoch);
                move.setString(3, uid);
                move.setString(4, replica);
                move.setLong(5, epoch);
                if (move.executeUpdate() == 0) {
                    db.rollback();
                    System.out.println("fenced off: epoch " + epoch + " is stale, nothing paid");
                    System.exit(3);
                }
                for (String merchant : new String[] {"m-ana", "m-bo", "m-cy"}) {
                    pay.setLong(1, batch);
                    pay.setString(2, merchant);
                    pay.setLong(3, 1000 + batch % 97);
                    pay.setLong(4, epoch);
                    pay.setString(5, uid);
                    pay.setString(6, replica);
                    pay.addBatch();
                }
                pay.executeBatch();
                db.commit();
            }
            System.out.println("paid batch " + batch + " with epoch " + epoch);
        }
    }
}
