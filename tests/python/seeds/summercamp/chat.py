# Seed program: the summer-camp notebook's "Exercise 3 - simple chat"
# (shared/seeds/001_f877ee2fcb13b304.txt), completed.
# The notebook gives only a template -- four empty functions, speak_to_all(),
# speak_to_all_interested(topic), speak_to_one(), speak_to_chosen() -- and asks "Which exchanges
# will you use to implement this behaviour?". Kept: the four names and kombu (the notebook's
# library). Ours, not the document's: the bodies, their parameters (who speaks, to whom, what),
# listen() and the command line. The answer used: fanout to speak to all, topic to speak to the
# interested, direct to speak to one, headers (x-match any) to speak to a chosen few.
# Broker from WARREN_HOST / WARREN_PORT (defaults localhost:5672); exchange names start with
# $CHAT_PREFIX (default "chat") so that tests do not share them.
#
#   python chat.py NAME listen [TOPIC ...]      prints "NAME <- SPEAKER: TEXT" per message
#   python chat.py NAME all TEXT
#   python chat.py NAME topic TOPIC TEXT
#   python chat.py NAME one OTHER TEXT
#   python chat.py NAME chosen OTHER,OTHER TEXT
import os
import sys

from kombu import Connection, Exchange, Queue, binding

URL = 'amqp://guest:guest@%s:%s//' % (os.environ.get('WARREN_HOST', 'localhost'),
                                      os.environ.get('WARREN_PORT', '5672'))
PREFIX = os.environ.get('CHAT_PREFIX', 'chat')

everyone = Exchange(PREFIX + '.all', 'fanout', durable=False)
topics = Exchange(PREFIX + '.topics', 'topic', durable=False)
direct = Exchange(PREFIX + '.direct', 'direct', durable=False)
chosen = Exchange(PREFIX + '.chosen', 'headers', durable=False)


def _say(speaker, exchange, text, routing_key='', headers=None):
    # Publisher confirms: when this returns, the broker has routed the message.
    with Connection(URL, transport_options={'confirm_publish': True}) as conn:
        conn.Producer(serializer='json').publish(
            {'from': speaker, 'text': text},
            exchange=exchange,
            routing_key=routing_key,
            headers=headers or {},
            declare=[exchange],
        )


def speak_to_all(speaker, text):
    _say(speaker, everyone, text)


def speak_to_all_interested(speaker, topic, text):
    _say(speaker, topics, text, routing_key=topic)


def speak_to_one(speaker, name, text):
    _say(speaker, direct, text, routing_key=name)


def speak_to_chosen(speaker, names, text):
    _say(speaker, chosen, text, headers={name: 'yes' for name in names})


def listen(name, interests=()):
    bindings = [binding(everyone),
                binding(direct, routing_key=name),
                binding(chosen, arguments={'x-match': 'any', name: 'yes'})]
    bindings += [binding(topics, routing_key=topic) for topic in interests]
    inbox = Queue('%s.%s' % (PREFIX, name), bindings=bindings, exclusive=True)

    def show(body, message):
        print('%s <- %s: %s' % (name, body['from'], body['text']))
        message.ack()

    with Connection(URL) as conn:
        with conn.Consumer(inbox, callbacks=[show]):
            print('%s is listening' % name)
            while True:
                conn.drain_events()


if __name__ == '__main__':
    me, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if command == 'listen':
        listen(me, args)
    elif command == 'all':
        speak_to_all(me, args[0])
    elif command == 'topic':
        speak_to_all_interested(me, args[0], args[1])
    elif command == 'one':
        speak_to_one(me, args[0], args[1])
    elif command == 'chosen':
        speak_to_chosen(me, args[0].split(','), args[1])
    else:
        sys.exit('unknown command %r' % command)
