def counter_value(doc):
    return doc["value"]
