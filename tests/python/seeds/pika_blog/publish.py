# Seed program "publish.py" from the pika blog (shared/seeds/002_3d1d4cfac00116e8.txt), run with
# pika 0.13 and pika 1.3 alike.
# Changed versus the document, and nothing else:
#   1. added `import os`;
#   2. pika.ConnectionParameters('localhost') -> pika.ConnectionParameters(
#          os.environ.get('WARREN_HOST', 'localhost'), int(os.environ.get('WARREN_PORT', '5672')))
#      so the tests can point it at a broker on another host/port; with neither variable set it
#      connects exactly as the original (localhost:5672).
# publish.py
import pika
import json
import os
import uuid


connection = pika.BlockingConnection(pika.ConnectionParameters(
    os.environ.get('WARREN_HOST', 'localhost'), int(os.environ.get('WARREN_PORT', '5672'))))
channel = connection.channel()

channel.exchange_declare(
    exchange='order',
    exchange_type='direct'
)

order = {
    'id': str(uuid.uuid4()),
    'user_email': 'john.doe@example.com',
    'product': 'Leather Jacket',
    'quantity': 1
}

channel.basic_publish(
    exchange='order',
    routing_key='order.notify',
    body=json.dumps({'user_email': order['user_email']})
)

print(' [x] Sent notify message')

channel.basic_publish(
    exchange='order',
    routing_key='order.report',
    body=json.dumps(order)
)

print(' [x] Sent report message')

connection.close()
