import hashlib, hmac, json, os, time, uuid
import redis

r = redis.Redis.from_url(os.environ.get("WSGATE_REDIS", "redis://127.0.0.1:6379"))
kid, secret = os.environ["WSGATE_ORDER_KEY"].split(":", 1)  # "KEYID:SECRET"

order = {"id": str(uuid.uuid4()), "ts": int(time.time() * 1000),
         "group": "room:1", "code": 4001, "reason": "signed out elsewhere"}
body = json.dumps(order)  # sign exactly the string that goes in "body"
sig = hmac.new(secret.encode(), body.encode("utf-8"), hashlib.sha256).hexdigest()
receivers = r.publish("wsgate:orders", json.dumps({"kid": kid, "sig": sig, "body": body}))
print(f"order {order['id']} reached {receivers} workers")
