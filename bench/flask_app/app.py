"""The original Flask + pymongo app's API, the baseline of `make bench-webapp`.

It keeps the original's behaviour (the whole collection built in memory for GET /data, the
request's JSON inserted as it is) so that the benchmark compares the webapp with what it
replaces. Run it as the original ran (`python app.py`, Flask's own server) or under gunicorn
(`gunicorn app:app`).

Environment: MONGODB_URI (default mongodb://localhost:27017/; its path names the database,
else flask_db), HOST (default 127.0.0.1) and PORT (default 5000) for `python app.py`.
"""

import os
from datetime import datetime

from flask import Flask, jsonify, request
from pymongo import ASCENDING, MongoClient

client = MongoClient(os.environ.get("MONGODB_URI", "mongodb://localhost:27017/"))
collection = client.get_default_database(default="flask_db")["data"]

app = Flask(__name__)


@app.route("/")
def index():
    return f"Welcome to the Flask app! The current time is: {datetime.now()}"


@app.route("/data", methods=["GET", "POST"])
def data():
    if request.method == "POST":
        collection.insert_one(request.get_json())
        return jsonify({"status": "Data inserted"}), 201
    # Sorted by _id, as the webapp reads, so both return the documents in insertion order.
    documents = list(collection.find({}, {"_id": 0}).sort("_id", ASCENDING))
    return jsonify(documents)


if __name__ == "__main__":
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "5000")))
