const crypto = require("crypto");
const Redis = require("ioredis");

const redis = new Redis(process.env.WSGATE_REDIS || "redis://127.0.0.1:6379");
const key = process.env.WSGATE_ORDER_KEY; // "KEYID:SECRET"
const kid = key.slice(0, key.indexOf(":"));
const secret = key.slice(key.indexOf(":") + 1);

const order = { id: crypto.randomUUID(), ts: Date.now(),
                group: "room:1", code: 4001, reason: "signed out elsewhere" };
const body = JSON.stringify(order); // sign exactly the string that goes in "body"
const sig = crypto.createHmac("sha256", secret).update(body, "utf8").digest("hex");
redis.publish("wsgate:orders", JSON.stringify({ kid, sig, body })).then((receivers) => {
  console.log(`order ${order.id} reached ${receivers} workers`);
  redis.disconnect();
});
